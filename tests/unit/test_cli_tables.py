"""The CLI's tables: lists aligned under upper-case headers with the preferred columns, int64 counts
as numbers, booleans as yes/no, single messages as aligned key-value lines."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from uplion.accounts.tables import render
from uplion.v1 import admin_pb2, aimodel_pb2


def test_a_list_is_a_table_with_the_preferred_columns() -> None:
    listed = aimodel_pb2.ListAIModelsResponse(next_page_token="echo", models=[
        aimodel_pb2.AIModel(name="echo", backlog=12345678901, spec=aimodel_pb2.AIModelSpec(type="echo", model="echo"),
                            status=aimodel_pb2.AIModelStatus(state="Running", replicas=1, ready_replicas=1)),
        aimodel_pb2.AIModel(name="gpt", backlog=-1, spec=aimodel_pb2.AIModelSpec(type="remote", model="gpt-4o-mini"),
                            status=aimodel_pb2.AIModelStatus(state="Failed", reason="SecretMissing")),
    ])  # fmt: skip
    out = render(MessageToDict(listed, preserving_proto_field_name=True)).splitlines()
    assert out[0].split() == ["NAME", "SPEC.MODEL", "SPEC.TYPE", "STATUS.STATE", "STATUS.READY_REPLICAS",
                              "STATUS.REPLICAS", "BACKLOG", "STATUS.REASON"]  # fmt: skip
    assert out[1].split() == ["echo", "echo", "echo", "Running", "1", "1", "12345678901"]
    assert out[2].split() == ["gpt", "gpt-4o-mini", "remote", "Failed", "-1", "SecretMissing"]
    assert out[3] == "next_page_token: echo"
    assert out[0].index("SPEC.MODEL") == out[2].index("gpt-4o-mini")  # columns aligned


def test_a_message_is_key_value_lines_and_an_empty_list_says_so() -> None:
    user = admin_pb2.User(user_id="u1", email="a@b.c", disabled=True, quota=admin_pb2.Quota(limit_micro_credits=5))
    lines = render(MessageToDict(user, preserving_proto_field_name=True)).splitlines()
    assert lines[2].split() == ["disabled", "yes"]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # values aligned
    assert any(line.startswith("quota.limit_micro_credits") and line.endswith(" 5") for line in lines)
    assert render({"users": []}) == "(no users)"
