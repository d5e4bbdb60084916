"""deploy/kuberay: each manifest parses and validates against KubeRay's CRD schema (vendored, with its
source, in tests/fixtures/kuberay), its pod templates against Kubernetes' PodTemplateSpec; the RayJobs run
exactly raycluster.yaml's cluster; and the settings the cloud GPU cluster relies on hold. No Kubernetes
cluster is needed (`kubectl apply --dry-run=client` cannot check a custom resource without one that has the
CRDs installed)."""

from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kuberay"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kuberay"
CRD_FIXTURES = {"RayCluster": "ray.io_rayclusters.v1.yaml", "RayJob": "ray.io_rayjobs.v1.yaml"}
K8S_DEFS = "k8s-v1.37.0-strict-defs.json"
POD_TEMPLATE = "io.k8s.api.core.v1.PodTemplateSpec"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_BOUNDS = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}

# Every file of deploy/kuberay and the kind it holds (a new file must be added here, and so gets checked).
MANIFESTS = {"raycluster.yaml": "RayCluster", "rayjob-train.yaml": "RayJob", "rayjob-sweep.yaml": "RayJob",
             "secrets.example.yaml": "Secret", "storage.example.yaml": "PersistentVolumeClaim"}
RAY_MANIFESTS = [name for name, kind in MANIFESTS.items() if kind in CRD_FIXTURES]
RAYJOBS = {"rayjob-train.yaml": "python jobs/train.py --config jobs/configs/mistral7b-8xh100.yaml",
           "rayjob-sweep.yaml": "python jobs/sweep.py sweeps/s2sched.yaml --set base=jobs/configs/mistral7b-8xh100.yaml"
                                " --set 'overrides={}' --set 'resources={trial_cpus: 1}'"}
MLFLOW_SECRET_ENV = {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY"}


def crd_to_jsonschema(node: Any) -> Any:
    """A CRD structural schema as a JSON Schema that judges a manifest as the API server does.

    An object with `properties` and without x-kubernetes-preserve-unknown-fields is closed (the API server
    rejects unknown fields under kubectl's default strict field validation, or prunes them: either way a
    typo'd key is lost); format int32/int64 bound the integer; x-kubernetes-int-or-string admits both. CEL
    rules (x-kubernetes-validations) and the list markers are not evaluated. The vendored references
    (x-vendored-k8s-type, x-vendored-kuberay-type) become `$ref`s into the validator's `$defs`."""
    if isinstance(node, list):
        return [crd_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    for marker in ("x-vendored-k8s-type", "x-vendored-kuberay-type"):
        if marker in node:
            return {"$ref": f"#/$defs/{node[marker]}"}
    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":  # its keys are field names, not keywords
            schema[key] = {name: crd_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf"):
            schema[key] = crd_to_jsonschema(value)
        elif not key.startswith("x-kubernetes-"):
            schema[key] = value
    if node.get("x-kubernetes-int-or-string"):
        schema.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("format") in INT_BOUNDS:
        low, high = INT_BOUNDS[node["format"]]
        schema["minimum"] = max(schema.get("minimum", low), low)
        schema["maximum"] = min(schema.get("maximum", high), high)
    open_object = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and not open_object:
        schema["additionalProperties"] = False
    return schema


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / CRD_FIXTURES[kind]).read_text())["openAPIV3Schema"]


@functools.cache
def validator(root: str) -> jsonschema.Draft202012Validator:
    """A validator for `root`: a kind of CRD_FIXTURES, or a definition of the vendored Kubernetes schema."""
    defs = json.loads((FIXTURES / K8S_DEFS).read_text())["$defs"]
    defs["RayClusterSpec"] = crd_to_jsonschema(crd_schema("RayCluster")["properties"]["spec"])
    schema = crd_to_jsonschema(crd_schema(root)) if root in CRD_FIXTURES else {"$ref": f"#/$defs/{root}"}
    return jsonschema.Draft202012Validator({**schema, "$defs": defs})


def problems(document: Any, root: str) -> list[str]:
    """Every violation of `root`'s schema in `document`, as `path: message`, in document order."""
    found = sorted(validator(root).iter_errors(document), key=lambda error: [str(p) for p in error.absolute_path])
    return [f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}" for error in found]


@functools.cache
def manifest(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(documents) == 1, f"{name}: one object per file, found {len(documents)}"
    return documents[0]


def edited(name: str) -> dict[str, Any]:
    """A copy of a manifest to break on purpose."""
    return copy.deepcopy(manifest(name))


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "RayCluster" else obj["spec"]["rayClusterSpec"]


def pod_templates(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A Ray manifest's pod templates, by where they are."""
    spec = cluster_spec(obj)
    templates = {"headGroupSpec": spec["headGroupSpec"]["template"]}
    for group in spec.get("workerGroupSpecs", []):
        templates[f"workerGroupSpecs[{group['groupName']}]"] = group["template"]
    if "submitterPodTemplate" in obj["spec"]:
        templates["submitterPodTemplate"] = obj["spec"]["submitterPodTemplate"]
    return templates


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def container(template: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in containers(template) if c["name"] == name)


def env(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in entry.get("env", [])}


def head(obj: dict[str, Any]) -> dict[str, Any]:
    return cluster_spec(obj)["headGroupSpec"]


def gpu_group(obj: dict[str, Any]) -> dict[str, Any]:
    groups = cluster_spec(obj)["workerGroupSpecs"]
    assert [group["groupName"] for group in groups] == ["gpu-h100"]
    return groups[0]


# -- the schema and its conversion ----------------------------------------------------------------------

def test_crd_to_jsonschema_follows_structural_schema_semantics() -> None:
    crd = {"type": "object", "properties": {
        "replicas": {"type": "integer", "format": "int32", "minimum": 0},
        "port": {"x-kubernetes-int-or-string": True},
        "free": {"type": "object", "properties": {"a": {"type": "string"}},
                 "x-kubernetes-preserve-unknown-fields": True},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "rule": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}
    check = jsonschema.Draft202012Validator(crd_to_jsonschema(crd))
    assert check.is_valid({"replicas": 2**31 - 1, "port": "http", "free": {"b": 1}, "labels": {"x": "y"}, "rule": "r"})
    assert check.is_valid({"port": 8265})
    for bad in ({"replicas": 2**31}, {"replicas": -1}, {"port": 1.5}, {"replicaz": 1}, {"labels": {"x": 1}}):
        assert not check.is_valid(bad), bad


def test_vendored_schemas_are_valid_and_every_reference_resolves() -> None:
    jsonschema.Draft202012Validator.check_schema(validator("RayJob").schema)  # its $defs hold RayClusterSpec too
    for kind in CRD_FIXTURES:
        schema = validator(kind).schema
        targets = set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema)))
        assert targets and targets <= set(schema["$defs"]), targets - set(schema["$defs"])


# -- every manifest -------------------------------------------------------------------------------------

def test_deploy_folder_holds_exactly_the_checked_manifests() -> None:
    assert sorted(path.name for path in DEPLOY.iterdir()) == sorted(MANIFESTS)


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_ray_manifest_validates_against_the_kuberay_schema(name: str) -> None:
    obj = manifest(name)
    assert (obj["apiVersion"], obj["kind"]) == ("ray.io/v1", MANIFESTS[name])
    assert problems(obj, obj["kind"]) == []
    assert problems(obj["metadata"], OBJECT_META) == []
    for where, template in pod_templates(obj).items():
        assert problems(template, POD_TEMPLATE) == [], where


def test_example_secret_and_volume_claim_are_plain_kubernetes_objects() -> None:
    secret, claim = manifest("secrets.example.yaml"), manifest("storage.example.yaml")
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert all(isinstance(value, str) for value in secret["stringData"].values())
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert problems(claim["spec"], "io.k8s.api.core.v1.PersistentVolumeClaimSpec") == []
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the head and every GPU pod mount it
    for obj in (secret, claim):
        assert problems(obj["metadata"], OBJECT_META) == []


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_runs_the_rayclusters_cluster(name: str) -> None:
    assert manifest(name)["spec"]["rayClusterSpec"] == manifest("raycluster.yaml")["spec"]


# -- what the cluster relies on (raycluster.yaml's spec, which the RayJobs repeat) -------------------

def test_token_authentication_and_in_tree_autoscaler_v2() -> None:
    spec = cluster_spec(manifest("raycluster.yaml"))
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert (options["version"], options["upscalingMode"]) == ("v2", "Default")
    assert isinstance(options["idleTimeoutSeconds"], int) and options["idleTimeoutSeconds"] > 0
    assert env(container(spec["headGroupSpec"]["template"], "ray-head"))["RAY_enable_autoscaler_v2"]["value"] == "1"
    ray_pin = re.search(r"^ray\[[^\]]*\]==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert ray_pin and spec["rayVersion"] == ray_pin.group(1)


def test_gpu_group_scales_from_zero_onto_8_gpu_nodes() -> None:
    group = gpu_group(manifest("raycluster.yaml"))
    assert (group["minReplicas"], group["replicas"]) == (0, 0) and group["maxReplicas"] >= 1
    template = group["template"]
    resources = container(template, "ray-worker")["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == int(resources["requests"]["nvidia.com/gpu"]) == 8
    assert group["rayStartParams"]["num-gpus"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in template["spec"]["tolerations"]
    volumes = template["spec"]["volumes"]
    shm = [volume["name"] for volume in volumes if volume.get("emptyDir", {}).get("medium") == "Memory"]
    assert {"name": shm[0], "mountPath": "/dev/shm"} in container(template, "ray-worker")["volumeMounts"]


def test_head_advertises_no_gpu_and_publishes_nothing_outside_the_cluster() -> None:
    group = head(manifest("raycluster.yaml"))
    assert group["rayStartParams"]["num-gpus"] == "0"
    assert all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}) for c in containers(group["template"]))
    # The dashboard listens on the pod's address (the operator and the GPU pods need it, see raycluster.yaml);
    # it stays inside the Kubernetes cluster: a ClusterIP head Service, no Ingress, token authentication.
    assert group["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert group.get("serviceType", "ClusterIP") == "ClusterIP" and not group.get("enableIngress", False)
    assert "headService" not in group


def test_mlflow_sidecar_serves_the_drivers_from_its_secret() -> None:
    template = head(manifest("raycluster.yaml"))["template"]
    mlflow = container(template, "mlflow")
    assert mlflow in template["spec"]["initContainers"] and mlflow["restartPolicy"] == "Always"  # a native sidecar
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and command[command.index("--port") + 1] == "5000"
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"):
        assert env(mlflow)[name]["valueFrom"]["secretKeyRef"]["name"] == "recfound-mlflow"
    ray_head = env(container(template, "ray-head"))
    assert ray_head["MLFLOW_TRACKING_URI"]["value"] == "http://$(POD_IP):5000"
    names = list(ray_head)  # $(POD_IP) expands only when POD_IP comes first
    assert names.index("POD_IP") < names.index("MLFLOW_TRACKING_URI")
    assert ray_head["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_no_credential_is_written_in_a_manifest(name: str) -> None:
    credentials_in_uri = re.compile(r"://[^/@\s]+:[^/@\s]*@")
    for where, template in pod_templates(manifest(name)).items():
        for entry in containers(template):
            for variable in env(entry).values():
                from_secret = "secretKeyRef" in variable.get("valueFrom", {})
                assert variable["name"] not in MLFLOW_SECRET_ENV or from_secret, (where, variable)
                assert not credentials_in_uri.search(str(variable.get("value", ""))), (where, variable["name"])


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_secret_and_volume_references_name_the_example_objects(name: str) -> None:
    secret, claim = manifest("secrets.example.yaml"), manifest("storage.example.yaml")
    for where, template in pod_templates(manifest(name)).items():
        for entry in containers(template):
            for variable in env(entry).values():
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"], (where, ref)
                    assert ref["key"] in secret["stringData"], (where, ref)
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], where


def test_shared_volume_holds_the_paper_configs_paths() -> None:
    config = yaml.safe_load((ROOT / "jobs" / "configs" / "mistral7b-8xh100.yaml").read_text())
    paths = [config["run"]["output_dir"], config["data"]["root"], config["data"]["tokenizer"],
             config["model"]["backbone"]]
    for where, template in pod_templates(manifest("raycluster.yaml")).items():
        ray_container = template["spec"]["containers"][0]  # KubeRay's Ray container comes first
        claims = {v["name"] for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}
        mounts = [m["mountPath"] for m in ray_container["volumeMounts"] if m["name"] in claims]
        assert all(any(Path(path).is_relative_to(mount) for mount in mounts) for path in paths), (where, mounts)


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_every_container_runs_the_projects_image(name: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {entry["image"] for template in pod_templates(manifest(name)).values() for entry in containers(template)}
    assert images == {f"registry.example.com/recfound:{version}"}


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_runs_its_command_and_cleans_up(name: str) -> None:
    spec = manifest(name)["spec"]
    assert spec["entrypoint"] == RAYJOBS[name]
    assert spec["submissionMode"] == "K8sJobMode" and "runtimeEnvYAML" not in spec  # the image holds the code
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0


# -- the validation can fail ----------------------------------------------------------------------------

def test_a_typo_in_spec_fails_naming_the_key() -> None:
    obj = edited("raycluster.yaml")
    obj["spec"]["enableInTreeAutoScaling"] = obj["spec"].pop("enableInTreeAutoscaling")
    assert problems(obj, "RayCluster") == [
        "spec: Additional properties are not allowed ('enableInTreeAutoScaling' was unexpected)"]


def test_a_typo_in_a_container_fails_naming_the_key() -> None:
    obj = edited("raycluster.yaml")
    ray_head = container(obj["spec"]["headGroupSpec"]["template"], "ray-head")
    ray_head["volumeMount"] = ray_head.pop("volumeMounts")
    assert problems(obj, "RayCluster") == ["spec/headGroupSpec/template/spec/containers/0: "
                                           "Additional properties are not allowed ('volumeMount' was unexpected)"]
    job = edited("rayjob-train.yaml")  # the same check reaches into a RayJob's cluster
    container(gpu_group(job)["template"], "ray-worker")["imagePullPolcy"] = "Always"
    assert problems(job, "RayJob") == ["spec/rayClusterSpec/workerGroupSpecs/0/template/spec/containers/0: "
                                       "Additional properties are not allowed ('imagePullPolcy' was unexpected)"]


def test_a_wrong_type_or_value_fails() -> None:
    obj = edited("raycluster.yaml")
    gpu_group(obj)["replicas"] = "two"
    obj["spec"]["authOptions"]["mode"] = "tokens"
    assert problems(obj, "RayCluster") == ["spec/authOptions/mode: 'tokens' is not one of ['disabled', 'token']",
                                           "spec/workerGroupSpecs/0/replicas: 'two' is not of type 'integer'"]
    job = edited("rayjob-sweep.yaml")
    job["spec"]["activeDeadlineSeconds"] = 2**31
    del job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert problems(job, "RayJob") == [
        "spec/activeDeadlineSeconds: 2147483648 is greater than the maximum of 2147483647",
        "spec/rayClusterSpec/headGroupSpec: 'template' is a required property"]
