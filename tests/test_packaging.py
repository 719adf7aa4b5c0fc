"""What ships outside the checkout: curation never imports the model stack; a built wheel, installed into a
new virtual environment, runs from another folder with its package data; the files the curation image copies
are enough to run the job; yt-dlp finds its JS runtime and challenge solver where the stack is installed.

The new environments take their third-party packages from this one (a .pth line naming its site-packages), so
that nothing is downloaded; hdvg itself comes only from the wheel (asserted through `hdvg.__file__`)."""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODEL_STACK = ("model", "diffusers", "kornia", "scipy")

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {MODEL_STACK!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (not installed here)", name=name)
    sys.meta_path.insert(0, Blocked())
""")


def run_python(code: str, cwd: Path, python: str = sys.executable, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_curation_imports_and_runs_without_the_model_stack(tmp_path):
    """Every hdvg and pipelines module imports, and the curation CLI answers, with `model`, diffusers, kornia
    and scipy unimportable; a model command then says what to install instead of a traceback."""
    code = BLOCKER + textwrap.dedent(f"""
        import contextlib, io, json, pkgutil, importlib
        import hdvg, pipelines
        names = [m.name for pkg in (hdvg, pipelines)
                 for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in names:
            if name != "pipelines.curate":  # its import runs the job (a __main__ module)
                importlib.import_module(name)
        from hdvg.cli import main
        help_text, codes = io.StringIO(), []
        for argv in (["--help"], ["curate", "--help"]):
            with contextlib.redirect_stdout(help_text):
                try:
                    main(argv)
                except SystemExit as exc:
                    codes.append(exc.code)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            train = main(["train", "--output", "x"])
        print(json.dumps({{"modules": names, "codes": codes, "train": train, "err": err.getvalue(),
                          "help": help_text.getvalue(),
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {MODEL_STACK!r})}}))
    """)
    proc = run_python(code, ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert {"hdvg.pipeline", "hdvg.cli", "hdvg.download", "hdvg.stats"} <= set(got["modules"])
    assert got["codes"][:2] == [0, 0] and "curate" in got["help"] and "--input" in got["help"]
    assert got["loaded"] == []
    assert got["train"] == 2 and "pip install 'hdvg[model]'" in got["err"]


def test_hdvg_help_lists_the_model_commands_where_they_are_installed(capsys):
    from hdvg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("curate", "train", "sample-video", "train-sr", "eval"))


def test_a_curation_command_loads_no_plugin(monkeypatch):
    import hdvg.cli

    def refuse(*args):
        raise AssertionError("plugins loaded for a curation command")

    monkeypatch.setattr(hdvg.cli, "load_plugins", refuse)
    assert hdvg.cli.main(["plan", "--set", "target_days=7"]) == 0


# ---------------------------------------------------------------- installed outside the checkout

def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def new_venv(where: Path) -> Path:
    """A virtual environment whose third-party packages are this one's (no download)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    Path(purelib, "hdvg_test_deps.pth").write_text(site_packages() + "\n")
    return where / "bin" / "python"


def build_and_install(source: Path, python: Path, wheels: Path) -> Path:
    """Build the wheel from a copy of `source` (setuptools writes build/ and *.egg-info beside the sources) and
    install it into `python`'s environment."""
    copy = wheels.parent / "sources"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".venv", ".git", "data", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(copy)], check=True, capture_output=True)
    (wheel,) = wheels.glob("hdvg-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    return wheel


@pytest.mark.slow
def test_wheel_runs_outside_the_checkout_with_its_package_data(tmp_path):
    python = new_venv(tmp_path / "venv")
    wheel = build_and_install(ROOT, python, tmp_path / "wheels")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bin_dir = python.parent
    where = run_python("import hdvg, model; print(hdvg.__file__); print(model.__file__)", elsewhere, str(python))
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(tmp_path / "venv")) for line in where.stdout.split()), where.stdout
    # the plan's measured constants, the training stages and the paper's prompts come from the wheel
    plan = subprocess.run([str(bin_dir / "hdvg"), "plan"], cwd=elsewhere, capture_output=True, text=True)
    assert plan.returncode == 0 and "total: USD" in plan.stdout, plan.stderr
    data = run_python(textwrap.dedent("""
        from model.train_config import load_config
        from model.eval.prompts import ucf101_prompts
        print(load_config("stage1").data.num_frames, len(ucf101_prompts()))
    """), elsewhere, str(python))
    assert data.returncode == 0, data.stderr[-2000:]
    assert data.stdout.split() == ["16", "101"]
    train = subprocess.run([str(bin_dir / "hdvg"), "train", "--help"], cwd=elsewhere, capture_output=True, text=True)
    assert train.returncode == 0 and "--resume" in train.stdout, train.stderr
    # the tiny random components `make train` uses come from the package, not from tests/
    tiny = subprocess.run([str(python), "-m", "model.tiny", str(tmp_path / "components")], cwd=elsewhere,
                          capture_output=True, text=True)
    assert tiny.returncode == 0 and (tmp_path / "components" / "vae" / "config.json").is_file(), tiny.stderr
    assert not any(name.startswith(("tests/", "bench/")) for name in wheel_names(wheel))


def wheel_names(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def dockerfile_copies() -> list[str]:
    """What deploy/Dockerfile copies into a curation image (the variants other than train drop `model`)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert re.search(r'if \[ "\$VARIANT" != train \]; then rm -r model; fi', text)
    return [s for s in sources if s != "model"]


@pytest.mark.slow
def test_the_files_the_curation_image_copies_run_the_job(tmp_path, sample_videos):
    context = tmp_path / "context"
    context.mkdir()
    for pattern in dockerfile_copies():
        for path in ROOT.glob(pattern):
            if path.is_dir():
                shutil.copytree(path, context / path.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, context / path.relative_to(ROOT))
    assert not (context / "model").exists()
    python = new_venv(tmp_path / "venv")
    build_and_install(context, python, tmp_path / "wheels")
    bin_dir, elsewhere = python.parent, tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    assert subprocess.run([str(bin_dir / "hdvg"), "--help"], cwd=elsewhere, env=env).returncode == 0
    missing = subprocess.run([str(bin_dir / "hdvg"), "train", "--output", "x"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "model" in missing.stderr and "hdvg[model]" in missing.stderr
    out = tmp_path / "out"
    job = subprocess.run([str(python), "-m", "pipelines.curate", "--input", str(sample_videos), "--output", str(out),
                          "--captioner", "none", "--limit", "2"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "Token authentication" not in job.stderr  # a private local cluster: token auth set, no warning
    assert "ETA 0 s" in job.stderr and "videos 2/2" in job.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == 2 and stats["last_run"]["yt_dlp"]
    assert list((out / "shards").glob("*.tar"))


def test_yt_dlp_reports_deno_and_its_challenge_provider(tmp_path):
    """yt-dlp's own verbose report, as a user would read it (`yt-dlp -v`): the JS runtime found and the
    challenge providers. The request goes to a closed port on 127.0.0.1 (nothing leaves the machine)."""
    yt_dlp = Path(sys.executable).parent / "yt-dlp"
    proc = subprocess.run([str(yt_dlp), "-v", "--simulate", "--proxy", "http://127.0.0.1:9", "--socket-timeout", "5",
                           "--extractor-retries", "0", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    report = proc.stdout + proc.stderr
    runtime = re.search(r"JS runtimes: (.+)", report)
    providers = re.search(r"JS Challenge Providers: (.+)", report)
    assert runtime and re.match(r"deno-(\d+)\.(\d+)", runtime.group(1)), report[-2000:]
    major, minor = map(int, re.match(r"deno-(\d+)\.(\d+)", runtime.group(1)).groups())
    assert (major, minor) >= (2, 3)
    available = [p.strip() for p in providers.group(1).split(",") if "unavailable" not in p]
    assert available == ["deno"], providers.group(1)


def test_youtube_readiness_names_what_is_missing(tmp_path):
    from hdvg.config import SourceConfig
    from hdvg.download import YouTubeNotReady, youtube_readiness

    ready = youtube_readiness(SourceConfig())
    assert ready["js_runtime"].startswith("deno ") and ready["challenge_providers"] == ["deno"]
    with pytest.raises(YouTubeNotReady, match=r"no usable JS runtime \(no Deno at .*/nowhere/deno\)"):
        youtube_readiness(SourceConfig(js_runtime=str(tmp_path / "nowhere" / "deno")))


def declared_requirements() -> set[str]:
    """Distribution names pyproject.toml declares, base and every extra."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(spec).name.lower().replace("_", "-") for spec in specs}


def test_every_third_party_import_is_a_declared_dependency():
    import ast
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    declared = declared_requirements()
    undeclared = {}
    for package in ("hdvg", "pipelines", "model"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("hdvg", "pipelines", "model"):
                        continue
                    dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                    if not dists & declared:
                        undeclared[top] = str(path.relative_to(ROOT))
    assert undeclared == {}
