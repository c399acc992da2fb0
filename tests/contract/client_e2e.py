#!/usr/bin/env python3
"""End to end through a client generated from the served OpenAPI document.

    client_e2e.py BASE_URL OWNER_KEY

With only the generated package `cmek_console_client` (openapi-python-client; run.sh puts it
on PYTHONPATH): its operation functions, found by the snake_case of their operationIds
whatever tag groups them, and its models, built with their `from_dict`. No raw HTTP.

Creates a key on the built-in Local KMS, a CMEK project, an encryption key of provider `local`
naming that local key, a cluster in that key's region;
stores an object and reads it back byte for byte; reads Key Status; exports the audit log as
JSON and finds the project's creation in it. Every step's status and content are checked;
the first failure ends the run with a message naming the step, and exit status 1. Where the
generated types are wrong but the call still works (an octet-stream body typed as a list of
integers), the run goes on and fails at the end, naming each.
"""

import argparse
import enum
import importlib
import inspect
import io
import os
import pkgutil
import sys
import time
import types
import typing
import uuid

PACKAGE = os.environ.get("CMEK_CLIENT_PACKAGE", "cmek_console_client")
REGION = "eu-west-1"


class StepFailed(Exception):
    pass


def fail(message: str) -> typing.NoReturn:
    raise StepFailed(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def value(v):
    """An enum member's wire value, anything else as it is."""
    return v.value if isinstance(v, enum.Enum) else v


def field(obj, name: str):
    """A model's attribute; a missing one (the document lacks the property) is a failure."""
    if not hasattr(obj, name):
        fail(f"{type(obj).__name__} has no attribute {name!r} (is it in the document's schema?)")
    return getattr(obj, name)


class Api:
    """The generated package's operations, by name (module `api/<tag>/<operation>.py`)."""

    def __init__(self, package: str, base_url: str, token: str):
        try:
            self.package = importlib.import_module(package)
            client_module = importlib.import_module(f"{package}.client")
            api = importlib.import_module(f"{package}.api")
        except ImportError as err:
            sys.exit(f"client_e2e.py: cannot import the generated client {package!r}: {err}")
        self.operations: dict[str, types.ModuleType] = {}
        for tag in pkgutil.iter_modules(api.__path__):
            tag_package = importlib.import_module(f"{package}.api.{tag.name}")
            for op in pkgutil.iter_modules(tag_package.__path__):
                module = importlib.import_module(f"{package}.api.{tag.name}.{op.name}")
                if op.name in self.operations:
                    sys.exit(f"client_e2e.py: operation {op.name} is generated twice (duplicate operationId?)")
                self.operations[op.name] = module
        import httpx

        self.client = client_module.AuthenticatedClient(
            base_url=base_url,
            token=token,
            raise_on_unexpected_status=False,
            timeout=httpx.Timeout(60.0),
        )

    def operation(self, *names: str) -> types.ModuleType:
        for name in names:
            if name in self.operations:
                return self.operations[name]
        fail(
            f"the generated client has no operation {' or '.join(names)} "
            f"(it has: {', '.join(sorted(self.operations))})"
        )

    @staticmethod
    def _annotation_types(annotation) -> list:
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return [t for arg in typing.get_args(annotation) for t in Api._annotation_types(arg)]
        return [annotation]

    def body(self, module: types.ModuleType, data: dict):
        """The operation's request body model, made from `data` with its `from_dict`."""
        parameter = inspect.signature(module.sync_detailed).parameters.get("body")
        if parameter is None:
            fail(f"{module.__name__}.sync_detailed takes no body")
        for candidate in self._annotation_types(parameter.annotation):
            if inspect.isclass(candidate) and hasattr(candidate, "from_dict"):
                return candidate.from_dict(data)
        fail(f"{module.__name__}: the body is {parameter.annotation!r}, not a generated model")

    def query_value(self, module: types.ModuleType, name: str, raw):
        """A query parameter's value: the enum's member when the document declares an enum."""
        parameter = inspect.signature(module.sync_detailed).parameters.get(name)
        if parameter is None:
            fail(f"{module.__name__}.sync_detailed has no parameter {name!r}")
        for candidate in self._annotation_types(parameter.annotation):
            if inspect.isclass(candidate) and issubclass(candidate, enum.Enum):
                return candidate(raw)
        return raw

    def annotation(self, module: types.ModuleType, name: str) -> list:
        parameter = inspect.signature(module.sync_detailed).parameters.get(name)
        return self._annotation_types(parameter.annotation) if parameter is not None else []

    def call(self, names, expected: int, *args, **kwargs):
        names = (names,) if isinstance(names, str) else names
        module = self.operation(*names)
        response = module.sync_detailed(*args, client=self.client, **kwargs)
        status = int(response.status_code)
        if status != expected:
            body = response.content[:2000].decode("utf-8", "replace")
            fail(f"{module.__name__.rsplit('.', 1)[-1]} answered {status}, expected {expected}: {body}")
        return response

    def parsed(self, response, kind: str):
        expect(response.parsed is not None, f"the {kind} answer was not parsed by the client (undocumented status or media type?)")
        return response.parsed


def run(base_url: str, owner_key: str) -> list[str]:
    """Runs every step; returns what is wrong in the generated types but did not stop the run."""
    api = Api(PACKAGE, base_url, owner_key)
    suffix = uuid.uuid4().hex[:8]
    typing_problems: list[str] = []

    def step(name: str) -> None:
        print(f"--- {name}", flush=True)

    step("createLocalKmsKey")
    create_local = api.operation("create_local_kms_key")
    local_name = f"contract-{suffix}"
    local = api.parsed(
        api.call("create_local_kms_key", 201, body=api.body(create_local, {"name": local_name})),
        "createLocalKmsKey",
    )
    local_key_id = str(field(local, "id"))
    expect(field(local, "name") == local_name, f"local key name {local.name!r}")
    expect(field(local, "enabled") is True, "the new local key is not enabled")
    print(f"local key {local_key_id}")

    step("createProject (cmek_enabled: true)")
    create_project = api.operation("create_project")
    name = f"contract-{suffix}"
    response = api.call(
        "create_project", 201, body=api.body(create_project, {"name": name, "cmek_enabled": True})
    )
    project = api.parsed(response, "createProject")
    project_id = field(project, "id")
    expect(field(project, "name") == name, f"project name {project.name!r}, expected {name!r}")
    expect(field(project, "cmek_enabled") is True, "the project is not CMEK-enabled")
    expect(
        response.headers.get("location") == f"/api/v1/projects/{project_id}",
        f"Location {response.headers.get('location')!r}",
    )
    print(f"project {project_id}")

    step("getProject")
    got = api.parsed(api.call("get_project", 200, project_id), "getProject")
    expect(field(got, "id") == project_id and got.name == name, "getProject answered another project")

    step(f"createEncryptionKey (provider local, region {REGION})")
    create_key = api.operation("create_encryption_key")
    response = api.call(
        "create_encryption_key",
        201,
        project_id,
        body=api.body(create_key, {"provider": "local", "region": REGION, "key_id": local_key_id}),
    )
    key = api.parsed(response, "createEncryptionKey")
    key_id = field(key, "id")
    expect(value(field(key, "provider")) == "local", f"key provider {key.provider!r}")
    expect(field(key, "region") == REGION, f"key region {key.region!r}")
    expect(str(field(key, "key_id")) == local_key_id, f"key_id {key.key_id!r}, expected {local_key_id}")
    expect(value(field(key, "status")) == "active", f"key status {key.status!r}, expected active")
    checks = field(key, "checks")
    expect(field(checks, "passed") is True, f"the checklist did not pass: {checks.to_dict()}")
    print(f"key {key_id}")

    step("listEncryptionKeys / getEncryptionKey")
    keys = api.parsed(api.call("list_encryption_keys", 200, project_id), "listEncryptionKeys")
    expect([k.id for k in field(keys, "items")] == [key_id], f"listEncryptionKeys: {keys.to_dict()}")
    got = api.parsed(api.call("get_encryption_key", 200, project_id, key_id), "getEncryptionKey")
    expect(field(got, "id") == key_id and value(got.status) == "active", f"getEncryptionKey: {got.to_dict()}")

    step(f"createCluster (provider local, regions [{REGION}])")
    create_cluster = api.operation("create_cluster")
    cluster_name = f"contract-{suffix}"
    response = api.call(
        "create_cluster",
        201,
        project_id,
        body=api.body(create_cluster, {"name": cluster_name, "provider": "local", "regions": [REGION]}),
    )
    cluster = api.parsed(response, "createCluster")
    cluster_id = field(cluster, "id")
    expect(field(cluster, "name") == cluster_name, f"cluster name {cluster.name!r}")
    expect(field(cluster, "project_id") == project_id, "the cluster is in another project")
    regions = field(cluster, "regions")
    expect(len(regions) == 1 and field(regions[0], "region") == REGION, f"regions {[r.to_dict() for r in regions]}")
    expect(field(regions[0], "key_id") == key_id, f"region key_id {regions[0].key_id!r}, expected {key_id}")
    deadline = time.monotonic() + 30
    while value(field(cluster, "state")) != "available":
        expect(time.monotonic() < deadline, f"the cluster is {value(cluster.state)!r}, not available, after 30 s")
        time.sleep(0.5)
        cluster = api.parsed(api.call("get_cluster", 200, cluster_id), "getCluster")
    print(f"cluster {cluster_id}: {value(cluster.state)}")

    step("putObject / getObject")
    put_object = api.operation("put_object")
    types_module = importlib.import_module(f"{PACKAGE}.types")
    payload = b"contract test \x00\xff\n" + os.urandom(4096)
    object_name = f"contract-{suffix}.bin"
    if types_module.File not in api.annotation(put_object, "body"):
        # The generated code sends `body.payload` whatever the annotation says, so the step
        # goes on, but a typed caller could not: the body should be `format: binary`.
        typing_problems.append(
            f"putObject's body is typed {api.annotation(put_object, 'body')}, not File: declare "
            "the application/octet-stream request body as {type: string, format: binary}"
        )
    body = types_module.File(
        payload=io.BytesIO(payload),
        file_name=object_name,
        mime_type="application/octet-stream",
    )
    response = api.call("put_object", 201, cluster_id, object_name, body=body)
    stored = api.parsed(response, "putObject")
    expect(field(stored, "name") == object_name, f"stored name {stored.name!r}")
    expect(field(stored, "size_bytes") == len(payload), f"size_bytes {stored.size_bytes}, expected {len(payload)}")
    response = api.call("get_object", 200, cluster_id, object_name)
    expect(response.content == payload, f"getObject returned {len(response.content)} bytes that differ from the {len(payload)} stored")
    if isinstance(response.parsed, types_module.File):
        expect(response.parsed.payload.read() == payload, "getObject's parsed File differs from the bytes stored")
    else:
        typing_problems.append(
            f"getObject's 200 answer is parsed as {type(response.parsed).__name__}, not File: give "
            "its application/octet-stream content the schema {type: string, format: binary}"
        )
    content_type = response.headers.get("content-type", "")
    expect(content_type.startswith("application/octet-stream"), f"getObject content-type {content_type!r}")
    listed = api.parsed(api.call("list_objects", 200, cluster_id), "listObjects")
    expect([o.name for o in field(listed, "items")] == [object_name], f"listObjects: {listed.to_dict()}")

    step("getKeyStatus")
    key_status = api.operation("get_key_status", "list_key_status")
    project_filter = api.query_value(key_status, "project_id", project_id)
    response = api.call(("get_key_status", "list_key_status"), 200, project_id=project_filter)
    report = api.parsed(response, "getKeyStatus")
    items = [i for i in field(report, "items") if field(i, "id") == key_id]
    expect(len(items) == 1, f"Key Status does not list key {key_id}: {report.to_dict()}")
    item = items[0]
    expect(field(item, "project_name") == name, f"Key Status project_name {item.project_name!r}")
    expect(value(field(item, "status")) == "active", f"Key Status says {item.status!r}")
    protected = field(item, "clusters")
    expect([c.id for c in protected] == [cluster_id], f"Key Status clusters {[c.to_dict() for c in protected]}")
    counts = field(report, "counts")
    counts = counts.to_dict() if hasattr(counts, "to_dict") else dict(counts)
    expect(counts.get("active") == 1, f"Key Status counts {counts}, expected active: 1 for this project")

    step("listAuditEvents (format=json)")
    audit = api.operation("list_audit_events")
    response = api.call(
        "list_audit_events",
        200,
        format_=api.query_value(audit, "format_", "json"),
        project_id=api.query_value(audit, "project_id", project_id),
    )
    content_type = response.headers.get("content-type", "")
    expect(content_type.startswith("application/json"), f"export content-type {content_type!r}")
    export = api.parsed(response, "listAuditEvents")
    events = field(export, "items")
    created = [e for e in events if field(e, "action") == "project.created" and field(e, "target") == f"project/{project_id}"]
    expect(len(created) == 1, f"the export has {len(created)} project.created events for project/{project_id}")
    expect(value(field(created[0], "outcome")) == "success", f"project.created outcome {created[0].outcome!r}")
    actions = {e.action for e in events}
    for wanted in ("encryption_key.created", "cluster.created"):
        expect(wanted in actions, f"the project's export has no {wanted!r} event: {sorted(actions)}")
    print(f"{len(events)} events exported for the project")
    return typing_problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url")
    parser.add_argument("owner_key")
    args = parser.parse_args()
    try:
        typing_problems = run(args.base_url.rstrip("/"), args.owner_key)
    except StepFailed as failure:
        print(f"client_e2e.py: FAILED: {failure}", file=sys.stderr)
        return 1
    if typing_problems:
        for problem in typing_problems:
            print(f"client_e2e.py: FAILED: {problem}", file=sys.stderr)
        print("client_e2e.py: every step worked, but the generated client's types are wrong", file=sys.stderr)
        return 1
    print("client_e2e.py: every step passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
