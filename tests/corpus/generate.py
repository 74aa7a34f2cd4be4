#!/usr/bin/env python3
"""Writes the bad-input corpus: malformed buildspecs, appspecs, JobSpecs and configs.

Hand-written cases are listed below; generated ones are mutations of the repository's
own valid examples (wrong types, deleted and duplicated lines, bad indentation, typos in
keys, truncations, unknown fields). A generated candidate is kept only when the agent
refuses it, so every file in the corpus is bad input; tests/bad_input.rs then checks that
each one gets a positioned error, a hint and exit code 2, never a panic or a hang.

Usage: tests/corpus/generate.py AGENT_BINARY   (rewrites tests/corpus/<kind>/)
Deterministic: the same examples and agent give the same corpus.
"""

import json
import os
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "corpus")
PER_KIND = {"buildspec": 60, "appspec": 45, "jobspec": 60, "config": 50}

KINDS = {
    # kind: (extension, seed files, command that checks one file)
    "buildspec": ("yml", ["examples/python-app/buildspec.yml", "examples/multi-artifact/buildspec.yml",
                          "examples/failing-build/buildspec.yml"],
                  ["validate", "--kind", "buildspec", "--color", "never"]),
    "appspec": ("yml", ["examples/deploy-app/appspec.yml"],
                ["validate", "--kind", "appspec", "--color", "never"]),
    "jobspec": ("json", sorted("docs/examples/jobs/" + f for f in os.listdir(os.path.join(ROOT, "docs/examples/jobs"))),
                ["job", "check"]),
    "config": ("toml", ["docs/examples/agent.toml"], ["config", "check"]),
}

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))

HAND = {
    "buildspec": {
        "empty": "",
        "only-comment": "# nothing here\n",
        "not-a-map": "- version: 0.2\n",
        "version-missing": "phases:\n  build:\n    commands:\n      - echo hi\n",
        "version-wrong": "version: 0.3\nphases:\n  build:\n    commands:\n      - echo hi\n",
        "version-as-list": "version: [0.2]\nphases:\n  build:\n    commands:\n      - echo hi\n",
        "tab-indent": "version: 0.2\nphases:\n\tbuild:\n\t\tcommands:\n\t\t\t- echo hi\n",
        "unknown-phase": "version: 0.2\nphases:\n  compile:\n    commands:\n      - make\n",
        "commands-as-map": "version: 0.2\nphases:\n  build:\n    commands:\n      run: make\n",
        "on-failure-bad": "version: 0.2\nphases:\n  build:\n    on-failure: MAYBE\n    commands:\n      - make\n",
        "env-variables-list": "version: 0.2\nenv:\n  variables:\n    - A=1\nphases:\n  build:\n    commands:\n      - echo $A\n",
        "env-shell-bad": "version: 0.2\nenv:\n  shell: fish\nphases:\n  build:\n    commands:\n      - echo hi\n",
        "secrets-bad-ref": "version: 0.2\nenv:\n  secrets-manager:\n    TOKEN: \"\"\nphases:\n  build:\n    commands:\n      - echo hi\n",
        "artifacts-no-files": "version: 0.2\nphases:\n  build:\n    commands:\n      - make\nartifacts:\n  name: out\n",
        "duplicate-key": "version: 0.2\nphases:\n  build:\n    commands:\n      - a\n  build:\n    commands:\n      - b\n",
        "unclosed-quote": "version: 0.2\nphases:\n  build:\n    commands:\n      - \"echo hi\n",
        "unclosed-flow": "version: 0.2\nphases: {build: {commands: [echo\n",
        "nul-byte": "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \x00\n",
        "billion-laughs": "version: 0.2\n" + BILLION_LAUGHS + "phases:\n  build:\n    commands: *i\n",
        "deep-nesting": "version: 0.2\nx: " + "[" * 5000 + "]" * 5000 + "\nphases: 1\n",
        "reports-bad": "version: 0.2\nphases:\n  build:\n    commands:\n      - make\nreports:\n  unit:\n    file-format: XML\n",
    },
    "appspec": {
        "empty": "",
        "not-a-map": "[files]\n",
        "version-wrong": "version: 1.0\nos: linux\n",
        "os-missing": "version: 0.0\n",
        "os-windows-typo": "version: 0.0\nos: windowz\n",
        "files-not-list": "version: 0.0\nos: linux\nfiles:\n  source: /\n",
        "source-missing": "version: 0.0\nos: linux\nfiles:\n  - destination: /srv/app\n",
        "destination-relative": "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: srv/app\n",
        "source-escape": "version: 0.0\nos: linux\nfiles:\n  - source: ../../etc\n    destination: /srv/app\n",
        "file-exists-bad": "version: 0.0\nos: linux\nfile_exists_behavior: CLOBBER\n",
        "hook-no-location": "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - timeout: 30\n",
        "hook-timeout-too-long": "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 3601\n",
        "hook-timeout-text": "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: soon\n",
        "hook-location-escape": "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: ../../x.sh\n",
        "permissions-mode-bad": "version: 0.0\nos: linux\npermissions:\n  - object: /srv/app\n    mode: 999\n",
        "permissions-type-bad": "version: 0.0\nos: linux\npermissions:\n  - object: /srv/app\n    type: [socket]\n",
        "tab-indent": "version: 0.0\nos: linux\nhooks:\n\tAfterInstall:\n\t\t- location: a.sh\n",
        "duplicate-hooks": "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a.sh\n  AfterInstall:\n    - location: b.sh\n",
        "billion-laughs": "version: 0.0\nos: linux\n" + BILLION_LAUGHS + "hooks: *i\n",
        "nul-byte": "version: 0.0\nos: linux\x00\n",
    },
    "jobspec": {
        "empty": "",
        "not-json": "version: 1\n",
        "array": "[]\n",
        "string": "\"job\"\n",
        "version-missing": '{"id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "version-2": '{"version": 2, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "version-string": '{"version": "1", "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "id-missing": '{"version": 1, "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "id-slash": '{"version": 1, "id": "../../etc/passwd", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "id-empty": '{"version": 1, "id": "", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "kind-bad": '{"version": 1, "id": "j1", "kind": "test", "source": {"type": "inline", "files": {}}}\n',
        "duplicate-key": '{"version": 1, "id": "j1", "id": "j2", "kind": "build", "source": {"type": "inline", "files": {}}}\n',
        "trailing-comma": '{"version": 1, "id": "j1", "kind": "build",}\n',
        "truncated": '{"version": 1, "id": "j1", "kind": "bu',
        "timeout-bad": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}, "timeout": "5 fortnights"}\n',
        "timeout-negative": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}, "timeout": -5}\n',
        "git-url-bad": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "git", "url": "not a url"}}\n',
        "git-depth-text": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "git", "url": "https://example.com/r.git", "depth": "all"}}\n',
        "s3-url-bad": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "s3", "url": "http://bucket/key"}}\n',
        "inline-escape": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {"../../x": "y"}}}\n',
        "inline-absolute": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {"/etc/cron.d/x": "y"}}}\n',
        "role-arn-bad": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}, "role": {"arn": "arn:aws:iam::12:role/x"}}\n',
        "env-not-strings": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}, "env": {"A": 1}}\n',
        "env-bad-name": '{"version": 1, "id": "j1", "kind": "build", "source": {"type": "inline", "files": {}}, "env": {"A B": "1"}}\n',
        "deploy-missing": '{"version": 1, "id": "j1", "kind": "deploy", "source": {"type": "inline", "files": {}}}\n',
        "image-on-deploy": '{"version": 1, "id": "j1", "kind": "deploy", "image": "x", "source": {"type": "inline", "files": {}}, "deploy": {"application": "a", "deployment_group": "g"}}\n',
        "invalid-utf8": b'{"version": 1, "id": "j\xff\xfe", "kind": "build"}\n',
        "deep-nesting": '{"version": 1, "id": "j1", "x": ' + "[" * 5000 + "]" * 5000 + "}\n",
        "huge": '{"version": 1, "id": "j1", "kind": "build", "pad": "' + "x" * (1 << 20) + '"}\n',
        "bom": "\ufeff" + '{"version": 1, "id": "j1"}\n',
    },
    "config": {
        "empty": "",
        "version-missing": "[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "version-2": "version = 2\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "no-sources": "version = 1\n",
        "concurrency-zero": "version = 1\n[agent]\nconcurrency = 0\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "concurrency-text": "version = 1\n[agent]\nconcurrency = \"two\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "work-dir-relative": "version = 1\n[agent]\nwork_dir = \"work\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "source-type-bad": "version = 1\n[[sources]]\ntype = \"kafka\"\n",
        "sqs-no-url": "version = 1\n[[sources]]\ntype = \"sqs\"\n",
        "sqs-url-bad": "version = 1\n[[sources]]\ntype = \"sqs\"\nqueue_url = \"queue\"\n",
        "role-pattern-bad": "version = 1\n[roles]\nallowed = [\"arn:aws:iam::*:user/x\"]\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "timeouts-inverted": "version = 1\n[jobs]\ndefault_timeout = \"2h\"\nmax_timeout = \"1h\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "memory-bad": "version = 1\n[jobs]\nmemory = \"lots\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "metrics-address-bad": "version = 1\n[agent]\nmetrics_address = \"localhost\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "duplicate-table": "version = 1\n[agent]\nconcurrency = 1\n[agent]\nconcurrency = 2\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "duplicate-key": "version = 1\nversion = 1\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "unclosed-string": "version = 1\n[agent]\nname = \"a\n",
        "unclosed-table": "version = 1\n[agent\n",
        "yaml-not-toml": "version: 1\nsources:\n  - type: spool\n",
        "invalid-utf8": b"version = 1\nname = \"\xff\"\n",
        "nul-byte": "version = 1\x00\n",
        "unknown-section": "version = 1\n[agnet]\nconcurrency = 1\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "webhook-not-url": "version = 1\n[notifications]\nwebhook = \"hooks.example.com\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
        "deploy-root-relative": "version = 1\n[deploy]\nroot = \"deployments\"\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n",
    },
}


def check(agent, kind, path):
    """The agent's exit code for one file, None when it hung."""
    cmd = [agent] + KINDS[kind][2] + [path]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode
    except subprocess.TimeoutExpired:
        return None


def yaml_mutations(text, rng):
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append("\n".join(lines[:i] + lines[i + 1:]))  # line deleted
        out.append("\n".join(lines[:i] + [line, line] + lines[i + 1:]))  # duplicated
        out.append("\n".join(lines[:i] + [" " + line] + lines[i + 1:]))  # mis-indented
        out.append("\n".join(lines[:i] + ["\t" + line.lstrip()] + lines[i + 1:]))  # tab
        out.append("\n".join(lines[:i]) + "\n" + line[: max(1, len(line) // 2)])  # truncated
        if ":" in stripped and not stripped.startswith("- "):
            key, _, value = stripped.partition(":")
            typo = key[:-1] if len(key) > 2 else key + "x"
            out.append("\n".join(lines[:i] + [f"{indent}{typo}:{value}"] + lines[i + 1:]))
            for bad in ["[1, 2]", "{a: b}", "-1", "~", "'\\x00'", "&x 3", "*nope"]:
                out.append("\n".join(lines[:i] + [f"{indent}{key}: {bad}"] + lines[i + 1:]))
        elif stripped.startswith("- "):
            for bad in ["- {x: [y]}", "- [nested, list]", "-"]:
                out.append("\n".join(lines[:i] + [indent + bad] + lines[i + 1:]))
    rng.shuffle(out)
    return out


def json_paths(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, path + (i,))


def with_value(doc, path, new, delete=False):
    doc = json.loads(json.dumps(doc))
    target = doc
    for p in path[:-1]:
        target = target[p]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return doc


def json_mutations(text, rng):
    doc = json.loads(text)
    out = []
    for path, value in json_paths(doc):
        if not path:
            continue
        if isinstance(path[-1], str):
            out.append(json.dumps(with_value(doc, path, None, delete=True), indent=2))
        for bad in [None, 7, -1, "", "x y", [], {}, True, "../../x", "1e400"]:
            if bad != value:
                out.append(json.dumps(with_value(doc, path, bad), indent=2))
        if isinstance(value, dict):
            out.append(json.dumps(with_value(doc, path, dict(value, unexpected=1)), indent=2))
    pretty = json.dumps(doc, indent=2)
    for cut in range(10, len(pretty), max(1, len(pretty) // 12)):
        out.append(pretty[:cut])
    rng.shuffle(out)
    return out


def toml_mutations(text, rng):
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        out.append("\n".join(lines[:i] + [line, line] + lines[i + 1:]))
        out.append("\n".join(lines[:i]) + "\n" + line[: max(1, len(line) // 2)])
        if "=" in stripped:
            key, _, value = stripped.partition("=")
            key = key.strip()
            out.append("\n".join(lines[:i] + [f"{key}x = {value.strip()}"] + lines[i + 1:]))
            for bad in ['"x y"', "-1", "0", "[]", "{}", "true", '"../../etc"', '"1 fortnight"', "1e400"]:
                out.append("\n".join(lines[:i] + [f"{key} = {bad}"] + lines[i + 1:]))
        elif stripped.startswith("["):
            out.append("\n".join(lines[:i] + [stripped.replace("[", "[x", 1)] + lines[i + 1:]))
    rng.shuffle(out)
    return out


MUTATE = {"buildspec": yaml_mutations, "appspec": yaml_mutations, "jobspec": json_mutations, "config": toml_mutations}


def main():
    agent = os.path.abspath(sys.argv[1])
    rng = random.Random(20261122)
    for kind, (ext, seeds, _) in KINDS.items():
        folder = os.path.join(CORPUS, kind)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, content in HAND[kind].items():
            data = content if isinstance(content, bytes) else content.encode()
            path = os.path.join(folder, f"hand-{name}.{ext}")
            with open(path, "wb") as f:
                f.write(data)
            code = check(agent, kind, path)
            if code != 2:
                print(f"{path}: hand-written case gives exit {code}, not 2", file=sys.stderr)
        seen = set()
        kept = 0
        candidates = []
        for seed in seeds:
            with open(os.path.join(ROOT, seed)) as f:
                candidates.extend(MUTATE[kind](f.read(), rng))
        for text in candidates:
            if kept >= PER_KIND[kind]:
                break
            if text in seen:
                continue
            seen.add(text)
            path = os.path.join(folder, f"gen-{kept + 1:03}.{ext}")
            with open(path, "w") as f:
                f.write(text)
            if check(agent, kind, path) == 2:
                kept += 1
            else:
                os.remove(path)
        print(f"{kind}: {len(HAND[kind])} hand-written, {kept} generated")


if __name__ == "__main__":
    main()
