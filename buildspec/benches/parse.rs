//! Parsing a large buildspec: 1,000 commands across the four phases, with the env,
//! artifacts, reports and cache sections a real project has. Target: under 2 ms.

#![allow(clippy::expect_used)] // a benchmark of a broken input measures nothing: stop loudly

use std::fmt::Write;
use std::hint::black_box;

use buildspec::{Source, parse_buildspec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn buildspec_with_commands(count: usize) -> String {
    let mut text = String::from(
        "version: 0.2\nenv:\n  shell: bash\n  variables:\n    ACCOUNT_ID: 012345678901\n    STAGE: prod\n  \
         parameter-store:\n    DB_PASSWORD: /prod/db/password\n  exported-variables:\n    - IMAGE_TAG\nphases:\n",
    );
    let phases = ["install", "pre_build", "build", "post_build"];
    for (p, phase) in phases.iter().enumerate() {
        let _ = writeln!(text, "  {phase}:\n    commands:");
        let share = count / phases.len() + usize::from(p < count % phases.len());
        for i in 0..share {
            let _ = match i % 4 {
                0 => writeln!(text, "      - echo \"step {i} of {phase}\""),
                1 => writeln!(text, "      - make -C module{i} all TARGET=$STAGE"),
                2 => writeln!(text, "      - 'echo \"status: {i}\" >> build.log'"),
                _ => writeln!(text, "      - test -f out/{i}.o && cp out/{i}.o dist/"),
            };
        }
    }
    text.push_str(
        "reports:\n  unit:\n    files:\n      - 'reports/*.xml'\n    file-format: JUNITXML\n\
         artifacts:\n  files:\n    - 'dist/**/*'\n  discard-paths: no\n\
         cache:\n  key: deps-$(codebuild-hash-files lock.json)\n  paths:\n    - '/root/.cache/**/*'\n",
    );
    text
}

fn bench(c: &mut Criterion) {
    let text = buildspec_with_commands(1_000);
    let source = Source::new("buildspec.yml", text.as_str());
    let parsed = parse_buildspec(&source);
    let spec = parsed.value.expect("the generated buildspec is valid");
    let commands: usize = spec.phases.iter().map(|(_, p)| p.commands.len()).sum();
    assert_eq!(commands, 1_000);

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("buildspec_1000_commands", |b| {
        b.iter(|| parse_buildspec(black_box(&source)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
