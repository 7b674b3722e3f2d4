"""The README's examples run as written, and its Quickstart has exactly two commands."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_quickstart_has_exactly_two_commands():
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    (commands,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line for line in commands.splitlines() if line.strip()]
    tests = "bash setup.sh && python3 -m pytest -q -n 2 --dist loadfile"
    assert lines == ["bash setup.sh && seqlab quickstart", tests]
    assert tests in (README.parent / ".ci" / "run").read_text()


def test_python_examples_run(tmp_path):
    (tmp_path / "corpus.txt").write_text("def add(a, b):\n    return a + b\n\n" * 200)
    code = "\n\n".join(blocks("python"))
    code += textwrap.dedent("""

        # The README says a registered mixer trains straight from a config:
        cfg = seqlab.RunConfig.from_dict({
            "model": {"mixer": "cumulative_mean", "position": "none", "d_model": 32,
                      "n_layers": 2, "context_length": 32},
            "data": {"path": "corpus.txt"},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1,
                      "progress": False}})
        seqlab.fit(cfg, "runs/custom")
        print("README-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README-OK" in proc.stdout


def test_yaml_examples_are_valid_configs(tmp_path):
    import yaml

    import seqlab

    found = blocks("yaml")
    assert len(found) >= 2
    for block in found:
        seqlab.RunConfig.from_dict(yaml.safe_load(block))


def test_example_commands_name_files_that_exist():
    for line in re.findall(r"^(?:python|seqlab train) (examples/\S+)", README.read_text(), flags=re.M):
        assert (README.parent / line).is_file(), line
