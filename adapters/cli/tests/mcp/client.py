"""A third-party MCP client (the official Python SDK, `pip install mcp`) against `ota`.

    python3 client.py http URL TOKEN     streamable HTTP with a bearer token: list tools,
                                         resources and prompts, read ota://fleet, get the rollback
                                         prompt, plan the pet_feeder update, start it with its
                                         plan_id, poll get_rollout until it completes, read
                                         ota://rollouts/{id}
    python3 client.py stdio OTA DATA_DIR `ota --data-dir DATA_DIR mcp` over stdio: the same lists
                                         and reads, and the device types

Prints a transcript; exits non-zero on any unexpected answer.
"""

import asyncio
import json
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

# tools/list shows each caller what the policies can allow it: a viewer the reads, an operator
# also planning, starting, cancelling and commands, an admin everything.
VIEWER_TOOLS = sorted([
    "list_device_types", "list_firmware", "fleet_status", "get_device", "get_rollout", "list_rollouts", "ask",
    "get_device_status", "list_devices", "get_command", "get_telemetry",
])
OPERATOR_TOOLS = sorted(VIEWER_TOOLS + ["plan_update", "start_rollout", "rollback", "cancel_rollout", "send_command"])
ADMIN_TOOLS = sorted(OPERATOR_TOOLS + ["set_ota_enabled"])


def say(*args):
    print(*args, flush=True)


def check(cond, what):
    if not cond:
        say("FAILED:", what)
        sys.exit(1)


async def session_checks(s, tools):
    init = await s.initialize()
    say("initialized:", init.server_info.name, init.server_info.version)
    names = sorted(t.name for t in (await s.list_tools()).tools)
    say("tools:", ", ".join(names))
    check(names in tools, f"the tools of a viewer, an operator or an admin, got {names}")
    uris = sorted(str(r.uri) for r in (await s.list_resources()).resources)
    templates = [t.uri_template for t in (await s.list_resource_templates()).resource_templates]
    say("resources:", ", ".join(uris), "| templates:", ", ".join(templates))
    check(uris == ["ota://firmware", "ota://fleet"], f"the catalog and fleet resources, got {uris}")
    check(templates == ["ota://rollouts/{id}"], f"the rollout template, got {templates}")
    fleet = (await s.read_resource("ota://fleet")).contents[0]
    check(fleet.mime_type == "application/json", f"ota://fleet is JSON: {fleet}")
    types = json.loads(fleet.text)["device_types"]
    check(any(t["device_type"] == "pet_feeder" and t["total"] == 4 for t in types), f"ota://fleet: {fleet.text}")
    prompts = sorted(p.name for p in (await s.list_prompts()).prompts)
    say("prompts:", ", ".join(prompts))
    check(prompts == ["rollback", "safe_rollout"], f"the two workflows, got {prompts}")
    back = await s.get_prompt("rollback", {"device_type": "pet_feeder", "version": "1.0.0"})
    text = " ".join(m.content.text for m in back.messages)
    check("rollback" in text and "plan_id" in text and "1.0.0" in text, f"the rollback prompt: {text}")


async def http(url, token):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await session_checks(s, [VIEWER_TOOLS, OPERATOR_TOOLS, ADMIN_TOOLS])
                args = {"device_types": ["pet_feeder"], "version": "latest"}
                plan = await s.call_tool("plan_update", args)
                check(not plan.is_error, f"plan_update: {plan.content}")
                p = plan.structured_content
                say("plan:", p["message"], "| plan_id", p["plan_id"])
                started = await s.call_tool("start_rollout", {**args, "plan_id": p["plan_id"]})
                check(not started.is_error, f"start_rollout: {started.content}")
                rollout_id = started.structured_content["rollouts"][0]["id"]
                say("started:", rollout_id)
                deadline = time.time() + 180
                while True:
                    r = await s.call_tool("get_rollout", {"id": rollout_id})
                    check(not r.is_error, f"get_rollout: {r.content}")
                    rollout, progress = r.structured_content["rollout"], r.structured_content["progress"]
                    counts = progress["counts"] if progress else {}
                    say("get_rollout:", rollout["status"], json.dumps({k: counts.get(k) for k in ("succeeded", "failed", "in_progress", "queued", "waiting")}))
                    if rollout["status"] != "IN_PROGRESS" and counts.get("in_progress", 0) == 0 and counts.get("queued", 0) == 0:
                        break
                    check(time.time() < deadline, "the rollout did not finish in 180 s")
                    await asyncio.sleep(1)
                check(rollout["status"] == "COMPLETED", f"completed, got {rollout['status']}")
                check(counts["succeeded"] == len(rollout["things"]), f"every device succeeded: {counts}")
                say("done:", rollout["status_reason"])
                read = (await s.read_resource(f"ota://rollouts/{rollout_id}")).contents[0]
                body = json.loads(read.text)
                check(body["rollout"]["status"] == "COMPLETED", f"ota://rollouts/{rollout_id}: {read.text}")
                check(body["progress"]["counts"]["succeeded"] == len(rollout["things"]), f"its progress: {read.text}")
                say("resource:", f"ota://rollouts/{rollout_id}", body["rollout"]["status"])


async def stdio(ota, data_dir):
    params = StdioServerParameters(command=ota, args=["--data-dir", data_dir, "mcp"])
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            # The local user owns the data dir: admin.
            await session_checks(s, [ADMIN_TOOLS])
            types = await s.call_tool("list_device_types", {})
            check(not types.is_error, f"list_device_types: {types.content}")
            say("device types:", len(types.structured_content["device_types"]))


if __name__ == "__main__":
    mode = sys.argv[1]
    asyncio.run(http(sys.argv[2], sys.argv[3]) if mode == "http" else stdio(sys.argv[2], sys.argv[3]))
