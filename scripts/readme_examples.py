"""Run README.md's shell examples in the order written, in a scratch copy of the repository.

    python scripts/readme_examples.py            # what CI runs: the fast examples, slow ones shortened or skipped
    python scripts/readme_examples.py --all      # every runnable example exactly as written (hours)
    python scripts/readme_examples.py --list     # each example with what would happen to it; runs nothing

Every command of a ```bash block is an example (continuation lines joined; comment lines skipped).
They run one by one with bash in a temporary copy of the repository's files, next to a `shared`
link to the real `../shared`, so `../shared/data` resolves and nothing is written into your tree;
`cxrkit` and `python` are the ones of the interpreter running this script, with this checkout's
`src` first on PYTHONPATH. Tags in an example's trailing comment (or, for a whole block, in an
HTML comment `<!-- readme-examples: TAG -->` on the line before its fence):

    [slow]       takes minutes or more here. CI runs the shortened command from SHORTENED below
                 when there is one (later examples need its output, or the command is worth a
                 check), and skips it otherwise.
    [not run]    needs what a fresh clone lacks: your own files, a server left running, a GPU
                 cluster, a database. Never run.
    [exit N]     the example is meant to exit with status N (e.g. `--strict` finding leakage).

Set-up and test commands (`python3 -m venv`, `pip install`, `pytest`, `.ci/...`, this script) are
CI's own job and never run here.

The run fails (exit 1) when an example exits with another status than expected, runs past
`--timeout`, or refers to a file or run folder that does not exist: an input that an earlier
example should have produced (its name is given) or a README path that is simply wrong.
Each example's status, exit code, wall-clock and CPU seconds (its processes' user + system time,
a figure that other jobs on the machine do not inflate) are printed as it finishes.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "shell"}
SETUP_PREFIXES = ("python3 -m venv", "pip install", "pytest", ". .venv/bin/activate", ".ci/",
                  "python scripts/readme_examples.py")
BLOCK_TAG = re.compile(r"<!--\s*readme-examples:\s*(.*?)\s*-->")
TAG = re.compile(r"\[(slow|not run|exit \d+)\]")
# options whose value is a path the command writes (not an input that must exist)
OUTPUT_OPTIONS = {"--out", "--output-dir", "--sr-dir", "--log", "--storage", "-o"}
PATH_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".csv", ".json", ".yaml", ".yml", ".db", ".sqlite",
                 ".onnx", ".pt", ".ckpt", ".py", ".npy", ".html", ".md", ".txt"}
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "2>", "&"}

# [slow] README commands -> what CI runs instead: the same command, shortened, because later
# examples use its output or to check the command works. The README command is matched exactly
# (continuation lines joined, without its comment).
SHORT_TRAINING = "--epochs 1 --set train.limit_train_batches=8"
SHORTENED = {
    "cxrkit train --recipe tb-fast --data ../shared/data/tb":
        f"cxrkit train --recipe tb-fast --data ../shared/data/tb {SHORT_TRAINING}",
    "cxrkit train --recipe tb-fast --data ../shared/data/tb --name tb-seed2 --split-file runs/tb-fast/split.csv "
    "--seed 2":
        "cxrkit train --recipe tb-fast --data ../shared/data/tb --name tb-seed2 --split-file runs/tb-fast/split.csv "
        f"--seed 2 {SHORT_TRAINING}",
    "cxrkit segment predict ../shared/data/tb/Tuberculosis --out runs/lungs-tb":
        "cxrkit segment predict ../shared/data/tb/Tuberculosis/Tuberculosis-1.png "
        "../shared/data/tb/Tuberculosis/Tuberculosis-2.png --out runs/lungs-tb",
    "cxrkit explain runs/tb-fast --data ../shared/data/tb --n 10 --benchmark --method gradcam --method occlusion":
        "cxrkit explain runs/tb-fast --data ../shared/data/tb --n 2 --benchmark --method gradcam --method occlusion",
}


@dataclass
class Example:
    """One README command: where it is, what it says and how it is tagged."""

    line: int
    code: str
    comment: str = ""
    tags: set[str] = field(default_factory=set)

    @property
    def expected_exit(self) -> int:
        codes = [int(tag.split()[1]) for tag in self.tags if tag.startswith("exit ")]
        return codes[0] if codes else 0

    @property
    def kind(self) -> str:
        """setup, not run, slow or run."""
        if self.code.startswith(SETUP_PREFIXES):
            return "setup"
        if "not run" in self.tags:
            return "not run"
        return "slow" if "slow" in self.tags else "run"


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one shell line: the comment starts at an unquoted `#` after a space."""
    quote = None
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ""


def extract(text: str) -> list[Example]:
    """Every command of the ```bash blocks of a Markdown text, in order."""
    examples: list[Example] = []
    lines = text.splitlines()
    index = 0
    previous = ""
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped.startswith("```"):
            previous = stripped or previous
            index += 1
            continue
        language = stripped[3:].strip().split(" ")[0].lower()
        block_tag = BLOCK_TAG.search(previous)
        block_tags = set(TAG.findall(block_tag.group(1))) if block_tag else set()
        index += 1
        while index < len(lines) and not lines[index].strip().startswith("```"):
            if language not in SHELL_LANGUAGES:
                index += 1
                continue
            start = index
            parts, comments = [], []
            while True:
                code, comment = split_comment(lines[index])
                comments.append(comment)
                continued = code.endswith("\\")
                parts.append(code[:-1].strip() if continued else code.strip())
                if not continued or index + 1 >= len(lines):
                    break
                index += 1
            index += 1
            code = " ".join(part for part in parts if part)
            if not code:  # blank or comment-only line
                continue
            comment = " ".join(c for c in comments if c)
            examples.append(Example(start + 1, code, comment, block_tags | set(TAG.findall(comment))))
        previous = ""
        index += 1
    return examples


def path_arguments(code: str) -> tuple[list[str], list[str]]:
    """(inputs, outputs): the arguments of a command that look like paths it reads or writes."""
    try:
        tokens = shlex.split(code, comments=True)
    except ValueError:
        return [], []
    inputs: list[str] = []
    outputs: list[str] = []
    program_next = True
    option = None
    for token in tokens:
        if token in SHELL_OPERATORS:
            option = ">" if token.startswith(">") or token == "2>" else None
            program_next = not token.startswith(">") and token != "2>"
            continue
        if token.startswith("-"):
            name, _, value = token.partition("=")
            option = None if value else name
            if value and name in OUTPUT_OPTIONS:
                outputs.append(value)
            continue
        is_program = program_next
        program_next = False
        if is_program or not _looks_like_path(token):
            option = None
            continue
        (outputs if option in OUTPUT_OPTIONS or option == ">" else inputs).append(token)
        option = None
    return inputs, outputs


def _looks_like_path(token: str) -> bool:
    if "://" in token or "=" in token or "@" in token:
        return False
    return "/" in token or Path(token).suffix.lower() in PATH_SUFFIXES


@dataclass
class Result:
    """What happened to one example."""

    example: Example
    status: str  # ok, FAILED, TIMEOUT, MISSING, skipped: ..., not run, setup
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    exit_code: int | None = None
    command: str = ""
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in {"FAILED", "TIMEOUT", "MISSING"}


def plan(example: Example, run_slow: bool) -> tuple[str | None, str]:
    """(the command to run or None, why it is not run)."""
    kind = example.kind
    if kind in {"setup", "not run"}:
        return None, kind
    if kind == "slow" and not run_slow:
        shortened = SHORTENED.get(example.code)
        return (shortened, "") if shortened else (None, "skipped: slow")
    return example.code, ""


def stale_overrides(examples: list[Example]) -> list[str]:
    """SHORTENED entries that match no [slow] README example (the README changed)."""
    slow = {example.code for example in examples if example.kind == "slow"}
    return [code for code in SHORTENED if code not in slow]


def missing_inputs(example: Example, command: str, workdir: Path, earlier: list[Result]) -> str:
    """A message naming inputs of `command` that do not exist (and which earlier example makes them)."""
    inputs, _ = path_arguments(command)
    messages = []
    for path in inputs:
        if (workdir / path).exists() or Path(path).is_absolute() and Path(path).exists():
            continue
        makers = [r for r in earlier if _mentions(r.example.code, path)]
        if makers:
            maker = makers[-1]
            why = f"the example on line {maker.example.line} should have made it ({maker.status})"
        else:
            why = "no earlier example makes it"
        messages.append(f"{path} does not exist: {why}")
    return "; ".join(messages)


def _mentions(code: str, path: str) -> bool:
    """Whether `code` names `path`, or makes the run folder `path` lies in (runs/NAME)."""
    if path in code:
        return True
    parts = Path(path).parts
    return len(parts) >= 2 and parts[0] == "runs" and _run_name(code) == parts[1]


def _run_name(code: str) -> str | None:
    """The run folder name a `cxrkit train` or `quickstart` command makes (--name, else the recipe)."""
    if code.startswith("cxrkit quickstart"):
        return "quickstart"
    if not code.startswith("cxrkit train"):
        return None
    named = re.search(r"--name[ =](\S+)", code) or re.search(r"--recipe[ =](\S+)", code)
    return named.group(1) if named else "tb-fast"


def scratch_copy(repo: Path) -> Path:
    """A temporary folder holding a copy of the repository's files (`repo/`) and a `shared` link."""
    root = Path(tempfile.mkdtemp(prefix="cxrkit-readme-"))
    target = root / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, capture_output=True)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = repo / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:
        shutil.copytree(repo, target, ignore=shutil.ignore_patterns(
            ".git", ".venv*", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    shared = repo.parent / "shared"
    if shared.exists():
        (root / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return target


def run_examples(examples: list[Example], workdir: Path, run_slow: bool = False, timeout: float = 600,
                 echo=print) -> list[Result]:
    """Run `examples` in order in `workdir`; one Result each."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), environment.get("PYTHONPATH")]))
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    logs = workdir.parent / "logs"
    logs.mkdir(exist_ok=True)
    results: list[Result] = []
    for example in examples:
        command, why = plan(example, run_slow)
        if command is None:
            result = Result(example, why)
        else:
            result = _run_one(example, command, workdir, environment, timeout, results, logs)
        results.append(result)
        echo(describe(result))
        if result.failed and result.detail:
            echo("\n".join("        " + line for line in result.detail.splitlines()))
    return results


def _run_one(example: Example, command: str, workdir: Path, environment: dict, timeout: float,
             earlier: list[Result], logs: Path) -> Result:
    missing = missing_inputs(example, command, workdir, earlier)
    if missing:
        return Result(example, "MISSING", command=command, detail=missing)
    log = logs / f"line{example.line}.log"
    started = time.monotonic()
    cpu_before = _children_cpu()
    with open(log, "wb") as output:
        process = subprocess.Popen(["bash", "-c", command], cwd=workdir, env=environment, stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    seconds = time.monotonic() - started
    cpu = _children_cpu() - cpu_before
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    if code is None:
        return Result(example, "TIMEOUT", seconds, cpu, None, command, f"killed after {timeout:.0f} s\n{tail}")
    status = "ok" if code == example.expected_exit else "FAILED"
    detail = "" if status == "ok" else f"exit {code}, expected {example.expected_exit}\n{tail}"
    return Result(example, status, seconds, cpu, code, command, detail)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def describe(result: Result) -> str:
    """One line: status, exit code, seconds, README line and the command run (or as written)."""
    example = result.example
    command = result.command or example.code
    shortened = " (shortened)" if result.command and result.command != example.code else ""
    code = "" if result.exit_code is None else str(result.exit_code)
    seconds = f"{result.seconds:6.1f} s {result.cpu_seconds:6.1f} s" if result.command else " " * 17
    return f"{result.status:<14} {code:>4} {seconds}  line {example.line:<4} {command}{shortened}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--all", action="store_true", help="run [slow] examples as written too")
    parser.add_argument("--list", action="store_true", help="list the examples and what would happen; run nothing")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per example (default 600)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args(argv)

    examples = extract(args.readme.read_text())
    stale = stale_overrides(examples)
    if stale:
        print("error: SHORTENED in scripts/readme_examples.py names commands that are no [slow] README "
              f"example: {stale}; update it to the README", file=sys.stderr)
        return 2
    if args.list:
        for example in examples:
            command, why = plan(example, args.all)
            print(f"{why or ('run shortened' if command != example.code else 'run'):<16} line {example.line:<4} "
                  f"{command or example.code}")
        return 0
    if not (args.readme.resolve().parent.parent / "shared" / "data").is_dir():
        print("error: ../shared/data not found next to the repository: the README's examples read it",
              file=sys.stderr)
        return 2
    workdir = scratch_copy(args.readme.resolve().parent)
    print(f"running the README's examples in {workdir}\n{'status':<14} exit   wall s    cpu s  README line, command")
    started = time.monotonic()
    try:
        results = run_examples(examples, workdir, args.all, args.timeout)
    finally:
        if not args.keep:
            shutil.rmtree(workdir.parent, ignore_errors=True)
    failed = [result for result in results if result.failed]
    ran = [result for result in results if result.command]
    print(f"{len(ran)} examples run in {time.monotonic() - started:.0f} s, {len(failed)} failed; "
          f"{len(results) - len(ran)} not run (tagged or set-up)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
