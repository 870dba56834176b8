"""The configs of deploy/, checked offline (nothing is applied or launched), each check shown to
reject a deliberately broken copy.

What is validated, and against what:

- deploy/aws/cluster.yaml (Ray's cluster launcher): against Ray's own schema, the
  `ray/autoscaler/ray-schema.json` of the pinned `ray` wheel (with jsonschema_rs), and through the
  steps `ray up` takes before it calls AWS (`prepare_config`, `validate_config`); each node type's
  `node_config` against botocore's model of EC2 RunInstances (the pinned `botocore`); its
  `resources` against the instance types of moto's copy of AWS's catalogue (the pinned `moto`).
- deploy/kubernetes/*.yaml: every RayCluster and RayJob against the OpenAPI v3 schema of KubeRay's
  own CRDs (v1.7.0, vendored unmodified in tests/vendor/kuberay-crds/), read strictly: a field the
  schema does not declare is an error, as the API server's strict field validation makes it, where
  a plain JSON-schema reading of a CRD lets it through; their metadata against Kubernetes'
  ObjectMeta. The Kubernetes objects (PersistentVolumeClaim, ConfigMap) and every Pod template
  inside the RayCluster and RayJob, against Kubernetes' own OpenAPI schemas in their strict
  JSON-schema form (no unknown field), as the pinned `kubernetes-validate` ships them; the
  RayCluster as Ray's autoscaler reads it on KubeRay (`ray.autoscaler._private.kuberay`); and the
  fields elastrain relies on (`raycluster_problems`, `rayjob_problems`).

Not checked offline: the CRDs' CEL rules (`x-kubernetes-validations`, e.g. the values of
`managedBy`), which only an API server evaluates; a test shows that deploy/ sets none of the fields
they guard.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import boto3
import botocore.session
import jsonschema_rs
import kubernetes_validate
import pytest
import ray.autoscaler
import yaml
from botocore.validate import ParamValidator
from moto import mock_aws
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.util import prepare_config, validate_config
from typer.main import get_command

from elastrain.api.service import cluster_of
from elastrain.cli.main import app
from elastrain.errors import UserError
from elastrain.scheduler.types import NodePool
from elastrain.sdk import Job
from elastrain.security.certs import issue_cert
from elastrain.security.transport import check_listen, check_server_tls
from elastrain.sim.spot import Prices, load_prices
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
LAUNCHER = DEPLOY / "aws" / "cluster.yaml"
RAYCLUSTER = DEPLOY / "kubernetes" / "raycluster.yaml"
RAYJOB = DEPLOY / "kubernetes" / "rayjob.yaml"
DOCKERFILE = DEPLOY / "kubernetes" / "Dockerfile"
CRDS = REPO / "tests" / "vendor" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
# The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships but one
# (1.30 is about the oldest that the big clouds still run).
K8S_VERSIONS = ("1.30.0", "1.37.0")
WORKER_TYPES = {"cpu-spot", "cpu-on-demand", "gpu-spot", "gpu-on-demand"}
# moto 5.2.5's copy of AWS's instance catalogue (from DescribeInstanceTypes) no longer lists the
# p3.2xlarge of the project's prices and traces in us-east-1 (only p3dn.24xlarge): AWS may no
# longer offer it there. Kept in the config because the scheduler's prices are its; if `ray up`
# says the type is not offered, put a one-GPU type that is (g5.xlarge, g6.xlarge) in the GPU
# types and its prices in examples/prices.yaml.
NOT_IN_MOTOS_CATALOGUE = {"p3.2xlarge"}


def ray_pin() -> str:
    """The `ray` version pinned in requirements.txt (with or without extras, e.g. ray[serve])."""
    return re.search(r"^ray(\[[\w,]+\])?==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE).group(2)


def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def manifests(path: Path) -> dict[str, dict]:
    """The objects of a multi-document manifest, by kind (one of each)."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    kinds = [doc["kind"] for doc in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {doc["kind"]: doc for doc in docs}


def raycluster() -> dict:
    return manifests(RAYCLUSTER)["RayCluster"]


def groups(cluster: dict) -> list[dict]:
    """The head group, then the worker groups."""
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


def ray_container(group: dict) -> dict:
    """The Ray container of a group: KubeRay's is the first of the Pod's containers."""
    return group["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, object]:
    return {var["name"]: var.get("value") for var in container.get("env", [])}


def invocation(script: str, *command: str) -> tuple[dict[str, str], list[str]]:
    """The environment assignments before, and the arguments after, the one place in a shell
    script where `command` (e.g. "elastrain", "server") is run; arguments end at the first
    operator (&, ;, |, >, ...)."""
    found = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        for at in range(len(words) - len(command) + 1):
            if tuple(words[at:at + len(command)]) == command:
                env = dict(word.split("=", 1) for word in words[:at] if re.fullmatch(r"[A-Za-z_]\w*=.*", word))
                args = []
                for word in words[at + len(command):]:
                    if set(word) <= set("&;|<>()"):
                        break
                    args.append(word)
                found.append((env, args))
    assert len(found) == 1, f"{' '.join(command)} is run {len(found)} times, not once, in:\n{script}"
    return found[0]


def cli_params(path: Sequence[str], args: list[str]) -> dict:
    """`args` parsed as elastrain's CLI parses them for the (sub)command `path`, without running it."""
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return command.make_context(" ".join(path), list(args)).params


def k8s_errors(obj: dict) -> list[str]:
    """What Kubernetes' strict schemas (every version of K8S_VERSIONS) find wrong with `obj`."""
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:   # a jsonschema.ValidationError
            errors.append(f"{version} {'/'.join(map(str, error.absolute_path))}: {error.message}")
    return errors


def as_pod_template(template: dict) -> dict:
    """A Pod template as the PodTemplate object Kubernetes' schemas know."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}


# ---------------------------------------------------------------------------------------------
# The cluster launcher's config


def ray_schema_errors(config: dict) -> list[str]:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
            for e in jsonschema_rs.validator_for(schema).iter_errors(config)]


def test_the_launcher_config_matches_rays_schema():
    assert ray_schema_errors(launcher()) == []
    broken = launcher()
    broken["available_node_types"]["gpu-spot"]["resources"]["GPU"] = "1"
    broken["available_node_types"]["cpu-spot"]["instance_type"] = "m5.2xlarge"
    assert ray_schema_errors(broken) == [
        "available_node_types/cpu-spot: Additional properties are not allowed ('instance_type' was unexpected)",
        'available_node_types/gpu-spot/resources/GPU: "1" is not of type "integer"']


def test_the_launcher_config_passes_the_checks_of_ray_up():
    config = prepare_config(launcher())   # Ray's defaults merged in, as `ray up` does first
    validate_config(config)
    assert config["head_node_type"] == "head" and set(config["available_node_types"]) == {"head", *WORKER_TYPES}
    # setup_commands run on every node before the head's and the workers' own.
    assert config["head_setup_commands"][:2] == launcher()["setup_commands"]
    broken = launcher()
    broken["head_node_type"] = "ray.head.default"
    with pytest.raises(ValueError, match="`head_node_type` must be one of `available_node_types`"):
        validate_config(prepare_config(broken))


def run_instances_errors(node_config: dict) -> str:
    """What botocore's model of EC2 RunInstances finds wrong with a node type's `node_config`
    (Ray's AWS provider passes it to RunInstances with the counts and tags it adds)."""
    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1}, shape)
    return report.generate_report() if report.has_errors() else ""


def test_every_node_config_is_a_run_instances_request():
    for name, node_type in launcher()["available_node_types"].items():
        assert run_instances_errors(node_type["node_config"]) == "", name
    broken = copy.deepcopy(launcher()["available_node_types"]["gpu-spot"]["node_config"])
    broken["InstanceMarketOptions"] = {"MarketTyp": "spot"}
    broken["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = "200"
    assert "Unknown parameter in InstanceMarketOptions: \"MarketTyp\"" in run_instances_errors(broken)
    assert "Invalid type for parameter BlockDeviceMappings[0].Ebs.VolumeSize" in run_instances_errors(broken)


def resource_mismatches(config: dict, catalogue: dict[str, dict]) -> list[str]:
    """Worker types whose `resources` are not their instance type's vCPUs and GPUs."""
    found = []
    for name, node_type in config["available_node_types"].items():
        instance = catalogue.get(node_type["node_config"]["InstanceType"])
        if name == config["head_node_type"] or instance is None:
            continue
        gpus = sum(gpu["Count"] for gpu in instance.get("GpuInfo", {}).get("Gpus", []))
        want = {"CPU": instance["VCpuInfo"]["DefaultVCpus"], **({"GPU": gpus} if gpus else {})}
        if node_type["resources"] != want:
            found.append(f"{name}: {node_type['resources']} but {instance['InstanceType']} has {want}")
    return found


def test_the_launchers_resources_are_its_instance_types(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")   # moto answers offline; no request leaves the process
    config = launcher()
    region = config["provider"]["region"]
    wanted = {t["node_config"]["InstanceType"] for t in config["available_node_types"].values()}
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=region)
        offerings = ec2.describe_instance_type_offerings(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": sorted(wanted)}])
        offered = {o["InstanceType"] for o in offerings["InstanceTypeOfferings"]}
        catalogue = {t["InstanceType"]: t for t in ec2.describe_instance_types(
            InstanceTypes=sorted(offered))["InstanceTypes"]}
    assert wanted - offered == NOT_IN_MOTOS_CATALOGUE
    assert resource_mismatches(config, catalogue) == []
    assert set(catalogue) == {"m5.xlarge", "m5.2xlarge"}   # the CPU types are checked
    broken = launcher()
    broken["available_node_types"]["cpu-spot"]["resources"] = {"CPU": 4}
    assert resource_mismatches(broken, catalogue) == ["cpu-spot: {'CPU': 4} but m5.2xlarge has {'CPU': 8}"]


def launcher_pools(config: dict) -> list[NodePool]:
    """The scheduler's node pools of the launcher's worker types: name, CPUs per node, most
    nodes, price and spot from `metadata.elastrain.node_pools` (the fixed ones `cluster_of` makes
    for node types it does not know are what this must not need)."""
    types = config["available_node_types"]
    return [NodePool(name, types[name]["resources"]["CPU"], 0, types[name]["max_workers"],
                     pool["price_per_hour"] or 0.0, pool["spot"])
            for name, pool in config["metadata"]["elastrain"]["node_pools"].items()]


def test_the_launchers_worker_types_are_the_schedulers_pools_at_its_prices():
    config = launcher()
    pools = config["metadata"]["elastrain"]["node_pools"]
    assert set(pools) == WORKER_TYPES == set(config["available_node_types"]) - {config["head_node_type"]}
    for name, pool in pools.items():
        market = config["available_node_types"][name]["node_config"].get("InstanceMarketOptions", {})
        assert pool["spot"] == (market.get("MarketType") == "spot") == name.endswith("-spot"), name
    # The GPU types are the simulator's pools at the prices it uses (examples/prices.yaml and
    # Prices' defaults), on the instance those prices are for.
    prices = load_prices(REPO / "examples" / "prices.yaml")
    assert prices == Prices()
    for name, pool in pools.items():
        if "simulator_pool" in pool:
            assert pool["price_per_hour"] == getattr(prices, pool["prices_key"]), name
            assert config["available_node_types"][name]["node_config"]["InstanceType"] == "p3.2xlarge"
    assert {pool["simulator_pool"] for pool in pools.values() if "simulator_pool" in pool} == {"spot", "on-demand"}
    # Ray names a node after its type, and the server counts live nodes into the pools of those
    # names: every worker type lands in its pool, the CPU-less head in none.
    live = [("head", 0.0), ("gpu-spot", 8.0), ("gpu-spot", 8.0), ("cpu-on-demand", 8.0)]
    cluster = cluster_of(launcher_pools(config), live)
    assert {pool.name: pool.nodes for pool in cluster.pools} == {
        "cpu-spot": 0, "cpu-on-demand": 1, "gpu-spot": 2, "gpu-on-demand": 0}
    renamed = cluster_of(launcher_pools(config), [("gpu_spot", 8.0)])   # a type not named as its pool
    assert renamed.pools[0].name == "gpu_spot/8" and renamed.pools[0].nodes == 1   # a fixed pool of its own


def test_the_launcher_starts_ray_and_the_server_as_the_readme_says(tmp_path):
    config = launcher()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        env, args = invocation("\n".join(config[key]), "ray", "start")
        assert env["RAY_worker_niceness"] == "0", key
        if key == "head_start_ray_commands":
            assert env["RAY_health_check_period_ms"] == "1000" and env["RAY_health_check_failure_threshold"] == "3"
            assert "--head" in args and "--num-cpus=0" in args and "--port=6379" in args
        else:
            assert "--address=$RAY_HEAD_IP:6379" in args
    env, args = invocation("\n".join(config["head_start_ray_commands"]), "elastrain", "server")
    assert env == {"RAY_ADDRESS": "127.0.0.1:6379"}
    server = cli_params(["server"], args)
    _, cert_args = invocation("\n".join(config["head_setup_commands"]), "elastrain", "admin", "certs")
    certs = cli_params(["admin", "certs"], cert_args)
    assert "127.0.0.1" in certs["hosts"]   # the address of `ray attach -p` in the README
    assert (server["tls_cert"], server["tls_key"]) == (certs["out_dir"] / "server.crt", certs["out_dir"] / "server.key")
    check_listen(server["host"], tls=True, insecure=server["insecure"])
    # The files `admin certs` writes there are a pair the server takes.
    made = issue_cert(tmp_path / certs["out_dir"].relative_to("/"), ["127.0.0.1"])
    check_server_tls(made.cert, made.key)
    with pytest.raises(Exception, match="No such option: --tls-certificate"):
        cli_params(["server"], [*args, "--tls-certificate", "x"])


def test_the_launcher_installs_this_checkout_with_its_pins():
    config = launcher()
    assert config["file_mounts"] == {"/home/ray/elastrain": "."}   # `ray up` runs from the repository root
    assert (REPO / "requirements.txt").is_file() and (REPO / "pyproject.toml").is_file()
    commands = "\n".join(config["setup_commands"])
    _, pip = invocation(commands, "pip", "install", "-q", "-r")
    assert pip == ["/home/ray/elastrain/requirements.txt"]
    _, editable = invocation(commands, "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e")
    assert editable == ["/home/ray/elastrain"]
    assert config["docker"]["image"] == f"rayproject/ray:{ray_pin()}-py311-gpu"   # the pinned Ray, Python 3.11
    assert ".gitignore" in config["rsync_filter"] and ".venv/" in (REPO / ".gitignore").read_text().split()


# ---------------------------------------------------------------------------------------------
# The KubeRay manifests


def test_the_kubernetes_objects_and_pod_templates_match_kubernetes_schemas():
    cluster = manifests(RAYCLUSTER)
    job = manifests(RAYJOB)
    assert set(cluster) == {"PersistentVolumeClaim", "RayCluster"} and set(job) == {"ConfigMap", "RayJob"}
    for obj in (cluster["PersistentVolumeClaim"], job["ConfigMap"]):
        assert k8s_errors(obj) == [], obj["kind"]
    templates = [group["template"] for group in groups(cluster["RayCluster"])]
    templates.append(job["RayJob"]["spec"]["submitterPodTemplate"])
    assert len(templates) == 6
    for template in templates:
        assert k8s_errors(as_pod_template(template)) == []
    broken = copy.deepcopy(templates[1])
    broken["spec"]["nodeSelecter"] = {"karpenter.sh/capacity-type": "spot"}
    assert any("'nodeSelecter' was unexpected" in error for error in k8s_errors(as_pod_template(broken)))
    broken = copy.deepcopy(templates[1])
    ray_container({"template": broken})["env"] = [{"name": "RAY_worker_niceness", "value": 0}]   # unquoted
    assert any("env/0/value: 0 is not of type" in error for error in k8s_errors(as_pod_template(broken)))


def test_rays_autoscaler_reads_the_raycluster_as_meant():
    cluster = copy.deepcopy(raycluster())
    cluster["metadata"]["namespace"] = "default"   # kubectl fills it in
    config = _derive_autoscaling_config_from_ray_cr(cluster)   # validated against ray-schema.json inside
    types = config["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert set(types) - {"headgroup"} == WORKER_TYPES
    for name in WORKER_TYPES:
        want = {"CPU": 7, **({"GPU": 1} if name.startswith("gpu-") else {})}
        assert {k: v for k, v in types[name]["resources"].items() if k != "memory"} == want, name
        assert types[name]["min_workers"] == 0
    assert {name: types[name]["max_workers"] for name in WORKER_TYPES} == {
        name: launcher()["available_node_types"][name]["max_workers"] for name in WORKER_TYPES}
    broken = copy.deepcopy(cluster)
    del ray_container(broken["spec"]["workerGroupSpecs"][0])["resources"]
    with pytest.raises(ValueError, match="failed to detect `CPU` resources for group cpu-spot"):
        _derive_autoscaling_config_from_ray_cr(broken)


@functools.cache
def crd_schema(kind: str) -> dict:
    """The OpenAPI v3 schema of version v1 of the vendored CRD of `kind` (RayCluster, RayJob)."""
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=yaml.CSafeLoader)   # 2.3 MB: libyaml
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def strict(schema: dict) -> dict:
    """A copy of a CRD's `schema` that rejects unknown fields as the API server does (it prunes
    them, and strict field validation makes that an error): `additionalProperties: false` on every
    object that lists its `properties` and does not keep unknown ones
    (`x-kubernetes-preserve-unknown-fields`); and null allowed where it says `nullable`, which
    is OpenAPI's word and not JSON Schema's."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(field) for name, field in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = strict(schema["items"])
    if "anyOf" in schema:
        schema["anyOf"] = [strict(branch) for branch in schema["anyOf"]]
    if schema.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


@functools.cache
def crd_validator(kind: str, strictly: bool = True) -> jsonschema_rs.Draft4Validator:
    """A validator of the CRD of `kind`; OpenAPI 3.0's schemas are JSON Schema draft 4 (nearly)."""
    return jsonschema_rs.Draft4Validator(strict(crd_schema(kind)) if strictly else crd_schema(kind))


def crd_errors(obj: dict) -> list[str]:
    """What the vendored CRD of `obj`'s kind, read strictly, finds wrong with `obj`, and what
    Kubernetes' strict schemas find wrong with its metadata (a CRD leaves that to ObjectMeta)."""
    errors = [f"{'/'.join(map(str, error.instance_path))}: {error.message}"
              for error in crd_validator(obj["kind"]).iter_errors(obj)]
    return errors + k8s_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]})


def custom_resources() -> list[dict]:
    """Every RayCluster and RayJob in deploy/."""
    return [doc for path in sorted(DEPLOY.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("kind") in CRD_FILES]


def test_the_rayclusters_and_rayjobs_match_kuberays_crds_strictly():
    resources = custom_resources()
    assert sorted(obj["kind"] for obj in resources) == ["RayCluster", "RayJob"]
    for obj in resources:
        assert crd_errors(obj) == [], obj["kind"]
    cluster, job = copy.deepcopy(raycluster()), copy.deepcopy(manifests(RAYJOB)["RayJob"])
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 8   # misspelt
    ray_container(cluster["spec"]["headGroupSpec"])["imagePullPolice"] = "Always"
    cluster["metadata"]["label"] = {"app": "elastrain"}
    assert crd_errors(cluster) == [
        "spec/headGroupSpec/template/spec/containers/0: Additional properties are not allowed "
        "('imagePullPolice' was unexpected)",
        "spec/workerGroupSpecs/0: Additional properties are not allowed ('maxReplica' was unexpected)",
        *(f"{version} metadata: Additional properties are not allowed ('label' was unexpected)"
          for version in K8S_VERSIONS)]
    assert crd_validator("RayCluster", strictly=False).is_valid(cluster)   # the CRD alone lets them through
    job["spec"]["shutdownAfterJobFinish"] = True   # shutdownAfterJobFinishes
    job["spec"]["ttlSecondsAfterFinished"] = "600"
    # An unquoted fractional quantity: the CRD's int-or-string takes an integer or a string.
    job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 1.5
    assert crd_errors(job) == [
        "spec/submitterPodTemplate/spec/containers/0/resources/limits/cpu: 1.5 is not valid under any "
        "of the schemas listed in the 'anyOf' keyword",
        'spec/ttlSecondsAfterFinished: "600" is not of type "integer"',
        "spec: Additional properties are not allowed ('shutdownAfterJobFinish' was unexpected)"]


def guarded(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The fields of `schema` that carry CEL rules: paths of field names, "*" for any item of a
    list or value of a map."""
    if "x-kubernetes-validations" in schema:
        yield path
    for name, field in schema.get("properties", {}).items():
        yield from guarded(field, (*path, name))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from guarded(schema[key], (*path, "*"))


def sets(value: object, path: tuple[str, ...]) -> bool:
    """Whether `value` holds something at `path` (as `guarded` writes paths)."""
    if not path:
        return True
    if path[0] == "*":
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return any(sets(item, path[1:]) for item in inner)
    return isinstance(value, dict) and path[0] in value and sets(value[path[0]], path[1:])


def test_deploy_sets_no_field_that_only_the_api_servers_cel_rules_check():
    for obj in custom_resources():
        rules = list(guarded(crd_schema(obj["kind"])))
        assert ("spec", "managedBy") in rules   # e.g. its values, checked by a CEL rule only
        assert [path for path in rules if sets(obj, path)] == [], obj["kind"]
    job = copy.deepcopy(manifests(RAYJOB)["RayJob"])
    job["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    assert [path for path in guarded(crd_schema("RayJob")) if sets(job, path)] == [("spec", "deletionStrategy")]


def raycluster_problems(cluster: dict) -> list[str]:
    """What is wrong, for elastrain, with the RayCluster: the fields it relies on."""
    problems = []
    if (cluster.get("apiVersion"), cluster.get("kind")) != ("ray.io/v1", "RayCluster"):
        problems.append("not a ray.io/v1 RayCluster")
    spec = cluster["spec"]
    if spec.get("rayVersion") != ray_pin():
        problems.append(f"rayVersion {spec.get('rayVersion')!r} is not the pinned ray {ray_pin()}")
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("no autoscaler: the workers jobs wait for are never added")
    if spec["headGroupSpec"].get("rayStartParams", {}).get("num-cpus") != "0":
        problems.append('the head is not started with num-cpus "0" (a string, as rayStartParams takes)')
    if {group.get("groupName") for group in spec["workerGroupSpecs"]} != WORKER_TYPES:
        problems.append("the worker groups are not the launcher's worker types")
    overwrite = cluster["metadata"].get("annotations", {}).get("ray.io/overwrite-container-cmd") == "true"
    for group in groups(cluster):
        container = ray_container(group)
        name = group.get("groupName", "head")
        if env_of(container).get("RAY_worker_niceness") != "0":
            problems.append(f"{name}: RAY_worker_niceness is not 0")
        script = " ".join(container.get("args", []))
        if overwrite and "$KUBERAY_GEN_RAY_START_CMD" not in script:
            problems.append(f"{name}: its command never starts Ray")
        if len({c.get("image") for c in group["template"]["spec"]["containers"]}) != 1:
            problems.append(f"{name}: containers of several images")
    head = env_of(ray_container(spec["headGroupSpec"]))
    if (head.get("RAY_health_check_period_ms"), head.get("RAY_health_check_failure_threshold")) != ("1000", "3"):
        problems.append("the head's GCS keeps Ray's slow node health check")
    return problems


def test_the_raycluster_has_what_elastrain_relies_on():
    assert raycluster_problems(raycluster()) == []
    broken = raycluster()
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    ray_container(broken["spec"]["workerGroupSpecs"][2])["env"] = []
    ray_container(broken["spec"]["workerGroupSpecs"][3])["args"] = ["ulimit -n 65536; sleep infinity"]
    assert raycluster_problems(broken) == [
        'the head is not started with num-cpus "0" (a string, as rayStartParams takes)',
        "gpu-spot: RAY_worker_niceness is not 0", "gpu-on-demand: its command never starts Ray"]


def test_the_head_serves_the_api_over_tls_from_a_secret_and_holds_no_token(tmp_path):
    cluster = raycluster()
    head = cluster["spec"]["headGroupSpec"]["template"]
    container = ray_container({"template": head})
    script = "\n".join(container["args"])
    env, args = invocation(script, "elastrain", "server")
    assert env == {"RAY_ADDRESS": "127.0.0.1:6379"}
    server = cli_params(["server"], args)
    check_listen(server["host"], tls=server["tls_cert"] is not None, insecure=server["insecure"])
    assert server["host"] == "0.0.0.0" and not server["insecure"]
    # The port is the head container's (so on elastrain-head-svc), and not Ray's metrics port.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["elastrain"] == server["port"] != 8080
    # Certificate and key are the tls.crt and tls.key of the Secret `kubectl create secret tls` makes.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret = {v["name"]: v["secret"] for v in head["spec"]["volumes"] if "secret" in v}
    assert list(secret) == ["tls"] and secret["tls"]["secretName"] == "elastrain-tls"
    assert (server["tls_cert"], server["tls_key"]) == (Path(mounts["tls"]) / "tls.crt", Path(mounts["tls"]) / "tls.key")
    # A pair from `elastrain admin certs`, laid out as the Secret's volume lays it out, starts the server.
    made = issue_cert(tmp_path / "certs", ["127.0.0.1", "elastrain-head-svc"])
    volume = tmp_path / Path(mounts["tls"]).relative_to("/")
    volume.mkdir(parents=True)
    (volume / "tls.crt").write_bytes(made.cert.read_bytes())
    (volume / "tls.key").write_bytes(made.key.read_bytes())
    check_server_tls(tmp_path / server["tls_cert"].relative_to("/"), tmp_path / server["tls_key"].relative_to("/"))
    assert secret["tls"]["defaultMode"] == 0o440 and head["spec"]["securityContext"]["fsGroup"] == 100
    # ELASTRAIN_HOME on the persistent volume.
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in head["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"home": manifests(RAYCLUSTER)["PersistentVolumeClaim"]["metadata"]["name"]}
    assert env_of(container)["ELASTRAIN_HOME"] == mounts["home"]
    # No token, nor any secret value, in the manifests or the launcher config.
    for path in (RAYCLUSTER, RAYJOB, LAUNCHER):
        text = path.read_text()
        assert not re.search(r"\bet_\w{6,}", text) and "ELASTRAIN_TOKEN" not in text, path
        assert all(doc is None or doc.get("kind") != "Secret" for doc in yaml.safe_load_all(text)), path


# Node labels and taints of spot and on-demand capacity: Karpenter's karpenter.sh/capacity-type,
# EKS managed node groups' eks.amazonaws.com/capacityType, GKE's cloud.google.com/gke-spot (and its
# preemptible VMs' cloud.google.com/gke-preemptible), and the node.kubernetes.io/lifecycle
# convention; on GPU nodes, the nvidia.com/gpu taint.
SPOT_NODES = [{"karpenter.sh/capacity-type": "spot"}, {"eks.amazonaws.com/capacityType": "SPOT"},
              {"cloud.google.com/gke-nodepool": "p", "cloud.google.com/gke-spot": "true"},
              {"node.kubernetes.io/lifecycle": "spot"}]
ON_DEMAND_NODES = [{"karpenter.sh/capacity-type": "on-demand"}, {"eks.amazonaws.com/capacityType": "ON_DEMAND"},
                   {"cloud.google.com/gke-nodepool": "p"}, {"node.kubernetes.io/lifecycle": "on-demand"}]
PREEMPTIBLE_NODE = {"cloud.google.com/gke-nodepool": "p", "cloud.google.com/gke-preemptible": "true"}
SPOT_TAINTS = [("karpenter.sh/capacity-type", "spot"), ("node.kubernetes.io/lifecycle", "spot"),
               ("cloud.google.com/gke-spot", "true")]
GPU_TAINT = ("nvidia.com/gpu", "present")


def admits(affinity: dict, labels: dict[str, str]) -> bool:
    """Whether a node with `labels` meets a Pod's required node affinity (Kubernetes' rules:
    terms ORed, a term's expressions ANDed)."""
    tests: dict[str, Callable[[dict], bool]] = {
        "In": lambda e: labels.get(e["key"]) in e["values"],
        "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
        "Exists": lambda e: e["key"] in labels,
        "DoesNotExist": lambda e: e["key"] not in labels}
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return any(all(tests[e["operator"]](e) for e in term["matchExpressions"]) for term in terms)


def tolerates(spec: dict, key: str, value: str) -> bool:
    """Whether a Pod tolerates the NoSchedule taint key=value."""
    return any(t["key"] == key and (t["operator"] == "Exists" or t.get("value") == value)
               and t.get("effect", "NoSchedule") == "NoSchedule" for t in spec.get("tolerations", []))


def placement_problems(cluster: dict) -> list[str]:
    problems = []
    for group in groups(cluster):
        name, spec = group.get("groupName", "head"), group["template"]["spec"]
        spot = name.endswith("-spot")
        wanted, unwanted = (SPOT_NODES, ON_DEMAND_NODES) if spot else (ON_DEMAND_NODES, [*SPOT_NODES, PREEMPTIBLE_NODE])
        problems += [f"{name}: not on {labels}" for labels in wanted if not admits(spec["affinity"], labels)]
        problems += [f"{name}: on {labels}" for labels in unwanted if admits(spec["affinity"], labels)]
        problems += [f"{name}: does not tolerate {key}={value}" for key, value in SPOT_TAINTS
                     if spot and not tolerates(spec, key, value)]
        gpus = ray_container(group)["resources"]["limits"].get("nvidia.com/gpu")
        if name.startswith("gpu-") != (gpus == "1") or (gpus and not tolerates(spec, *GPU_TAINT)):
            problems.append(f"{name}: GPU request or toleration wrong")
    return problems


def test_spot_groups_go_to_spot_nodes_and_the_rest_to_on_demand_nodes():
    assert placement_problems(raycluster()) == []
    broken = raycluster()
    spot, on_demand = broken["spec"]["workerGroupSpecs"][0], broken["spec"]["workerGroupSpecs"][1]
    spot["template"]["spec"]["affinity"], on_demand["template"]["spec"]["affinity"] = (
        on_demand["template"]["spec"]["affinity"], spot["template"]["spec"]["affinity"])
    terms = broken["spec"]["headGroupSpec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    terms[-1]["matchExpressions"] = terms[-1]["matchExpressions"][:1]   # any GKE node, Spot ones too
    problems = placement_problems(broken)
    assert "head: on {'cloud.google.com/gke-nodepool': 'p', 'cloud.google.com/gke-spot': 'true'}" in problems
    assert "cpu-spot: not on {'karpenter.sh/capacity-type': 'spot'}" in problems
    assert "cpu-on-demand: on {'karpenter.sh/capacity-type': 'spot'}" in problems


def rayjob_problems(docs: dict[str, dict], cluster: dict) -> list[str]:
    """What is wrong, for elastrain, with the RayJob and its ConfigMap."""
    job, config_map = docs["RayJob"], docs["ConfigMap"]
    spec = job["spec"]
    problems = []
    if (job.get("apiVersion"), job.get("kind")) != ("ray.io/v1", "RayJob"):
        problems.append("not a ray.io/v1 RayJob")
    if spec.get("clusterSelector") != {"ray.io/cluster": cluster["metadata"]["name"]}:
        problems.append("not run on the RayCluster of raycluster.yaml")
    command = shlex.split(spec["entrypoint"])
    if command[:2] != ["elastrain", "run"] or len(command) != 3:
        problems.append(f"the entrypoint is not `elastrain run SPEC`: {spec['entrypoint']}")
        return problems
    working_dir = Path(yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"])
    pod = spec["submitterPodTemplate"]["spec"]
    volume = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    mounts = {Path(m["mountPath"]): m["name"] for m in pod["containers"][0]["volumeMounts"]}
    if volume.get(mounts.get(working_dir)) != config_map["metadata"]["name"]:
        problems.append(f"working_dir {working_dir} is not where the ConfigMap is mounted")
    if pod["containers"][0].get("command"):
        problems.append("the submitter has a command of its own: KubeRay would not submit the job")
    if command[2] not in config_map["data"]:
        problems.append(f"the ConfigMap has no {command[2]}")
        return problems
    try:
        resources = Job(yaml.safe_load(config_map["data"][command[2]])).spec.resources
    except UserError as error:
        return [*problems, f"{command[2]}: {error.line()}"]
    cpus = [ray_container(g)["resources"]["limits"]["cpu"] for g in cluster["spec"]["workerGroupSpecs"]]
    if not any(float(c) >= resources.cpus_per_worker for c in cpus):
        problems.append("no worker group holds one of its workers")
    return problems


def test_the_rayjob_runs_the_configmaps_spec_on_the_cluster():
    docs = manifests(RAYJOB)
    assert rayjob_problems(docs, raycluster()) == []
    broken = copy.deepcopy(docs)
    broken["RayJob"]["spec"]["runtimeEnvYAML"] = "working_dir: /home/ray/jobs\n"
    broken["ConfigMap"]["data"]["job.yaml"] = broken["ConfigMap"]["data"]["job.yaml"].replace("lr: 0.003", "lr: -1")
    problems = rayjob_problems(broken, raycluster())
    assert problems[0] == "working_dir /home/ray/jobs is not where the ConfigMap is mounted"
    assert problems[1].startswith("job.yaml: ") and "train.lr" in problems[1]
    broken = copy.deepcopy(docs)
    broken["RayJob"]["spec"]["clusterSelector"] = {"ray.io/cluster": "raycluster-kuberay"}
    assert rayjob_problems(broken, raycluster()) == ["not run on the RayCluster of raycluster.yaml"]


def test_every_image_carries_the_pinned_ray():
    base = re.search(r"^FROM (\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert base == launcher()["docker"]["image"] == f"rayproject/ray:{ray_pin()}-py311-gpu"
    images = {c["image"] for group in groups(raycluster()) for c in group["template"]["spec"]["containers"]}
    images |= {c["image"] for c in manifests(RAYJOB)["RayJob"]["spec"]["submitterPodTemplate"]["spec"]["containers"]}
    assert images == {"elastrain:0.1.0"}   # the one image deploy/kubernetes/Dockerfile builds
