#!/usr/bin/env bash
# Runs one fuzz target from its committed corpus (and the repository's examples as seeds),
# then minimises the corpus and packs it into fuzz/corpus/TARGET.tar.gz, which is committed.
# Usage: fuzz/run.sh TARGET [SECONDS]      default 1800 s; a crash stops the run (exit 1)
# Targets: buildspec appspec jobspec config masker glob
set -euo pipefail
cd "$(dirname "$0")"
target=$1
seconds=${2:-1800}
seeds=()
options=(-max_len=8192)
case "$target" in
  buildspec) seeds=(../buildspec/tests/fixtures/valid/buildspec); options+=(-dict=yaml.dict) ;;
  appspec) seeds=(../buildspec/tests/fixtures/valid/appspec); options+=(-dict=yaml.dict) ;;
  jobspec) seeds=(../docs/examples/jobs ../tests/corpus/jobspec) ;;
  config) seeds=(../docs/examples ../tests/corpus/config) ;;
  # Without -len_control=0 libFuzzer grows inputs slowly and the masker's stayed short;
  # its splitting and long-value cases need inputs of kilobytes.
  masker) options=(-max_len=4096 -len_control=0) ;;
  glob) options=(-max_len=4096) ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
# The corpus is committed as one archive per target; the unpacked folder is a working copy.
if [ ! -d "corpus/$target" ] && [ -f "corpus/$target.tar.gz" ]; then
  tar xzf "corpus/$target.tar.gz" -C corpus
fi
mkdir -p "corpus/$target"
export RUSTC_BOOTSTRAP=1
cargo fuzz run -O "$target" "corpus/$target" "${seeds[@]}" -- "${options[@]}" \
  -max_total_time="$seconds" -print_final_stats=1
cargo fuzz cmin -O "$target" "corpus/$target" -- "${options[@]}"
tar czf "corpus/$target.tar.gz" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -C corpus "$target"
