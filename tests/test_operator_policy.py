"""The operator's least-privilege policy (hrnb.provision.policies.operator_policy): the one
docs/operations.md prints, and exactly enough to run ``hrnb setup``, ``stream``, ``query``,
``redrive`` and ``teardown`` as an IAM user holding nothing else, against a private emulator
that enforces IAM (the shared stack does not). Without any one of its statements, a command
fails and names an action of that statement."""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from support import create_function, free_port
from support.private_emulator import private_emulator

from hrnb import cli, provision
from hrnb.clients import aws_client
from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, Settings
from hrnb.provision import policies

ACCOUNT = "123456789012"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
_DOC_BLOCK = re.compile(r"<!-- operator-policy -->\n```json\n(.*?)```\n", re.DOTALL)


def documented_policy() -> policies.PolicyDocument:
    """The policy for the default settings, as docs/operations.md prints it."""
    return provision.Arns.of(Settings(), "<account-id>").operator_policy()


def test_the_documented_policy_is_the_generated_one() -> None:
    found = _DOC_BLOCK.search(DOCS.read_text())
    assert found, "docs/operations.md lacks the <!-- operator-policy --> block"
    assert json.loads(found.group(1)) == documented_policy(), (
        "regenerate it: hrnb policy --account '<account-id>'")


def test_the_operator_policy_is_least_privilege() -> None:
    arns = provision.Arns.of(Settings(prefix="alpha"), ACCOUNT)
    document = arns.operator_policy()
    owned = {arns.stream, arns.role, arns.log_group, arns.log_group.removesuffix(":*"),
             f"arn:aws:logs:ap-south-1:{ACCOUNT}:log-group:*", arns.domain, arns.function,
             arns.layer, f"{arns.layer}:*", arns.queue, arns.alert_topic, arns.alert_log_queue,
             "*"}
    assert policies.least_privilege_problems(document, allowed_resources=owned) == []
    sids = [statement["Sid"] for statement in document["Statement"]]
    assert len(sids) == len(set(sids)) == len(policies.OPERATOR_STATEMENTS)
    trigger = next(s for s in document["Statement"] if s["Sid"] == "ManageIndexerTrigger")
    assert trigger["Condition"] == {"StringEquals": {"lambda:FunctionArn": arns.function}}
    assert not any(str(action).startswith("es:ESHttp")
                   for statement in document["Statement"] for action in statement["Action"])


# --- enforced -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Enforcing:
    """The enforcing emulator: its URL, the admin's IAM client, and on a secured stack the
    URL of its own SigV4 front to the shared node (the shared front knows only the shared
    emulator's identities, as a domain knows only its own account's)."""

    url: str
    admin: Any
    front_url: str | None


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enforcing]:
    """A private emulator enforcing IAM after three free calls, which make an admin; and the
    admin's IAM client, which makes the operators."""
    cache = tmp_path_factory.mktemp("enforcing-cache")
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "3", "HRNB_STRICT_IAM_PROPAGATION_S": "1"}
    stack, port = Settings.from_env(), free_port()
    front = (("--front-port", str(port), "--node-url",
              f"https://127.0.0.1:{stack.resolved_opensearch_node_port}",
              "--tls-dir", str(stack.local_ca_path.parent), "--region", stack.region)
             if stack.local_security else ())
    with private_emulator(cache, env, front) as url:
        bootstrap = boto3.client("iam", endpoint_url=url, region_name="ap-south-1",
                                 aws_access_key_id=LOCAL_ACCESS_KEY_ID,
                                 aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY)
        bootstrap.create_user(UserName="admin")
        bootstrap.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = bootstrap.create_access_key(UserName="admin")["AccessKey"]
        admin = boto3.client("iam", endpoint_url=url, region_name="ap-south-1",
                             aws_access_key_id=key["AccessKeyId"],
                             aws_secret_access_key=key["SecretAccessKey"])
        yield Enforcing(url, admin, f"https://127.0.0.1:{port}" if front else None)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """A Lambda build as ``hrnb setup --build-dir`` reads it: manifest and function zip."""
    out = tmp_path / "build"
    out.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(e, c):\n    return {}\n")
    (out / "function.zip").write_bytes(buffer.getvalue())
    (out / "manifest.json").write_text(json.dumps({
        "function": {"file": "function.zip"}, "handler": "handler.lambda_handler"}))
    return out


class Operator:
    """An IAM user holding exactly one policy, running hrnb commands in this process."""

    def __init__(self, enforcing: Enforcing, without: str | None, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """The operator policy of a fresh prefix, ``without`` one of its statements."""
        url, admin = enforcing.url, enforcing.admin
        if enforcing.front_url:  # the shared node through the enforcing emulator's front
            stack = Settings.from_env()
            monkeypatch.setenv("HRNB_OPENSEARCH_URL", enforcing.front_url)
            monkeypatch.setenv("HRNB_STACK_STATE_DIR", str(stack.local_stack_dir))
        self.prefix = f"op-{uuid.uuid4().hex[:6]}"
        policy = provision.Arns.of(Settings(prefix=self.prefix), ACCOUNT).operator_policy()
        policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != without]
        name = f"operator-{self.prefix}"
        admin.create_user(UserName=name)
        admin.put_user_policy(UserName=name, PolicyName="hrnb-operator",
                              PolicyDocument=json.dumps(policy))
        key = admin.create_access_key(UserName=name)["AccessKey"]
        for variable, value in (
                ("HRNB_AWS_ENDPOINT_URL", url), ("HRNB_PREFIX", self.prefix),
                ("HRNB_INDEX_NAME", f"{self.prefix}-hr"),
                ("HRNB_DLQ_INDEX_NAME", f"{self.prefix}-hr-dlq"),
                ("HRNB_STATE_DIR", str(tmp_path / "state")),
                ("HRNB_LOCAL_ACCESS_KEY_ID", key["AccessKeyId"]),
                ("HRNB_LOCAL_SECRET_ACCESS_KEY", key["SecretAccessKey"])):
            monkeypatch.setenv(variable, value)
        self.capsys = capsys

    def run(self, *argv: str) -> tuple[int, str]:
        code = cli.main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out + captured.err


def _commands(build_dir: Path) -> list[tuple[str, ...]]:
    """The commands run as the operator. ``hrnb stream`` is not among them: it refuses a stream
    no trigger reads, and the local poller cannot run here (moto's STS answers AssumeRole with
    a 500 while IAM is enforced); :func:`test_the_stream_statement_is_what_lets_samples_in`
    checks its statement with the producer's own call instead."""
    return [("setup", "--build-dir", str(build_dir)), ("query", "recent"), ("redrive",),
            ("teardown", "--yes")]


#: Statements only 'hrnb stream' needs (checked by their own test below).
_STREAM_ONLY = {"ReadAndWriteHeartRateStream"}


@pytest.fixture
def own_indices(opensearch: Any) -> Iterator[list[str]]:
    """Index prefixes the test used on the shared node, deleted afterwards."""
    prefixes: list[str] = []
    yield prefixes
    for prefix in prefixes:
        opensearch.indices.delete(index=f"{prefix}-hr*", ignore_unavailable=True)
        for template in (f"{prefix}-hr-template", f"{prefix}-hr-dlq-template"):
            opensearch.indices.delete_index_template(name=template, ignore=[404])


@pytest.mark.stack
def test_an_operator_with_exactly_the_policy_runs_everything(
        settings: Settings, enforcing: Enforcing, build_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        own_indices: list[str]) -> None:
    operator = Operator(enforcing, None, tmp_path, monkeypatch, capsys)
    own_indices.append(operator.prefix)
    for command in _commands(build_dir):
        code, output = operator.run(*command)
        assert code == 0, f"hrnb {' '.join(command)}:\n{output}"
    assert "nothing hrnb created remains" in output


@pytest.mark.stack
@pytest.mark.parametrize("sid", [sid for sid, _actions in policies.OPERATOR_STATEMENTS
                                 if sid not in _STREAM_ONLY])
def test_without_any_one_statement_a_command_fails_naming_its_action(
        sid: str, settings: Settings, enforcing: Enforcing, build_dir: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        own_indices: list[str]) -> None:
    operator = Operator(enforcing, sid, tmp_path, monkeypatch, capsys)
    own_indices.append(operator.prefix)
    actions = dict(policies.OPERATOR_STATEMENTS)[sid]
    for command in _commands(build_dir):
        code, output = operator.run(*command)
        if code != 0:
            named = re.findall(r"(?:permission missing \(|not authorized to perform: )"
                               r"([\w-]+:[\w*]+)", output)
            assert named and named[0] in actions, f"hrnb {' '.join(command)}:\n{output}"
            return
    pytest.fail(f"every command succeeded without statement {sid}")


@pytest.mark.stack
def test_get_function_carries_tags_only_for_callers_who_may_list_them(
        enforcing: Enforcing) -> None:
    """The strict emulator with IAM enforcement on: GetFunction's ``Tags`` follow
    ``lambda:ListTags``, as on AWS."""
    url, admin = enforcing.url, enforcing.admin
    name = f"tagged-{uuid.uuid4().hex[:6]}"
    keys = admin.create_access_key(UserName="admin")["AccessKey"]
    session = boto3.Session(aws_access_key_id=keys["AccessKeyId"],
                            aws_secret_access_key=keys["SecretAccessKey"],
                            region_name="ap-south-1")
    role = admin.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
        policies.lambda_trust_policy()))["Role"]["Arn"]
    lam = session.client("lambda", endpoint_url=url)
    create_function(lam, FunctionName=name, Runtime="python3.12", Role=role, Handler="h.h",
                    Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18}, Tags={"k": "v"})
    assert lam.get_function(FunctionName=name)["Tags"] == {"k": "v"}  # the admin may ListTags
    reader = f"reader-{name}"
    admin.create_user(UserName=reader)
    admin.put_user_policy(UserName=reader, PolicyName="get-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": "*"}]}))
    reader_keys = admin.create_access_key(UserName=reader)["AccessKey"]
    as_reader = boto3.client("lambda", endpoint_url=url, region_name="ap-south-1",
                             aws_access_key_id=reader_keys["AccessKeyId"],
                             aws_secret_access_key=reader_keys["SecretAccessKey"])
    assert "Tags" not in as_reader.get_function(FunctionName=name)


@pytest.mark.stack
@pytest.mark.parametrize("without", [None, "ReadAndWriteHeartRateStream"])
def test_the_stream_statement_is_what_lets_samples_in(
        without: str | None, enforcing: Enforcing, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The producer's PutRecords as the operator (who may create its prefix's stream): allowed
    with the policy, refused naming kinesis:PutRecords without its statement."""
    Operator(enforcing, without, tmp_path, monkeypatch, capsys)
    settings = Settings.from_env()
    kinesis = aws_client(settings, "kinesis")
    kinesis.create_stream(StreamName=settings.stream_name, ShardCount=1)
    try:
        kinesis.get_waiter("stream_exists").wait(StreamName=settings.stream_name)
        entry = {"Data": b"{}", "PartitionKey": "athlete"}
        if without is None:
            answer = kinesis.put_records(StreamName=settings.stream_name, Records=[entry])
            assert answer["FailedRecordCount"] == 0
        else:
            with pytest.raises(ClientError, match="kinesis:PutRecords"):
                kinesis.put_records(StreamName=settings.stream_name, Records=[entry])
    finally:
        kinesis.delete_stream(StreamName=settings.stream_name)
