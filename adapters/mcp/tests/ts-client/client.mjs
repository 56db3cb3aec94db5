// A third-party MCP client (the TypeScript SDK, @modelcontextprotocol/sdk, pinned in
// package-lock.json) against `ota serve`'s /mcp over streamable HTTP with a bearer token.
//
//   node client.mjs URL TOKEN operator   list tools, call read tools, list and read resources, list
//                                        prompts and get safe_rollout, plan the pet_feeder update
//   node client.mjs URL TOKEN viewer     the same reads, but planning is refused
//   node client.mjs URL - none           without a token the connection is refused
//
// Every tool declares an outputSchema, and the SDK validates every structuredContent (results
// and refusals) against it. Prints a transcript ending in "passed"; exits non-zero on any unexpected answer.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, role] = process.argv.slice(2);
if (!url || !token || !["operator", "viewer", "none"].includes(role)) {
  console.error("usage: node client.mjs URL TOKEN operator|viewer|none");
  process.exit(2);
}

// tools/list shows each caller what the policies can allow it: a viewer the reads, an operator
// also planning, starting, cancelling and commands (set_ota_enabled is an admin's).
const VIEWER_TOOLS = [
  "ask", "fleet_status", "get_command", "get_device", "get_device_status", "get_rollout", "get_telemetry",
  "list_device_types", "list_devices", "list_firmware", "list_rollouts",
];
const OPERATOR_TOOLS = [...VIEWER_TOOLS, "cancel_rollout", "plan_update", "rollback", "send_command", "start_rollout"];
const TOOLS = (role === "viewer" ? VIEWER_TOOLS : OPERATOR_TOOLS).slice().sort();

const say = (...args) => console.log(...args);
function check(cond, what) {
  if (!cond) {
    say("FAILED:", what);
    process.exit(1);
  }
}

/** `promise`, or a failure after `seconds`. */
function bounded(what, promise, seconds = 30) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const text = (result) => (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join(" ");

async function connect(headers) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "ota-ts-client-test", version: "0.0.0" });
  await bounded("initialize", client.connect(transport));
  return client;
}

async function main() {
  if (role === "none") {
    let refused = null;
    try {
      const client = await connect({});
      await bounded("tools/list", client.listTools());
    } catch (e) {
      refused = e;
    }
    check(refused !== null, "a client without a token was served");
    say("no token: refused:", String(refused.message ?? refused).slice(0, 200));
    say("passed");
    return;
  }
  const client = await connect({ Authorization: `Bearer ${token}` });
  const server = client.getServerVersion();
  say("initialized:", server?.name, server?.version);

  const { tools } = await bounded("tools/list", client.listTools());
  const names = tools.map((t) => t.name).sort();
  say("tools:", names.join(", "));
  check(JSON.stringify(names) === JSON.stringify(TOOLS), `the ${role}'s tools, got ${names}`);
  for (const t of tools) check(t.inputSchema?.type === "object", `${t.name} has an object input schema`);
  for (const t of tools) check(t.outputSchema?.type === "object", `${t.name} declares an object output schema`);
  say("output schemas:", tools.filter((t) => t.outputSchema).length, "of", tools.length);

  const types = await bounded("list_device_types", client.callTool({ name: "list_device_types", arguments: {} }));
  check(!types.isError, `list_device_types: ${text(types)}`);
  const listed = types.structuredContent?.device_types ?? [];
  check(listed.length > 0, `list_device_types names the demo types: ${JSON.stringify(types.structuredContent)}`);
  say("device types:", listed.length);

  const device = await bounded("get_device", client.callTool({ name: "get_device", arguments: { thing: "pet_feeder-02" } }));
  check(!device.isError, `get_device: ${text(device)}`);
  check(JSON.stringify(device.structuredContent ?? {}).includes("pet_feeder-02"), `get_device: ${text(device)}`);
  say("get_device: pet_feeder-02");

  // More reads, each validated by the SDK against the tool's outputSchema; a refusal (an
  // unknown rollout) carries structured content of the schema's refusal shape.
  for (const [name, a] of [
    ["list_firmware", {}],
    ["list_firmware", { device_type: "pet_feeder" }],
    ["fleet_status", {}],
    ["fleet_status", { device_type: "pet_feeder", version: "1.x" }],
    ["list_rollouts", {}],
  ]) {
    const r = await bounded(name, client.callTool({ name, arguments: a }));
    check(!r.isError && r.structuredContent, `${name}: ${text(r)}`);
  }
  const missing = await bounded("get_rollout", client.callTool({ name: "get_rollout", arguments: { id: "no-such-rollout" } }));
  check(missing.isError && missing.structuredContent?.error === "not_found", `get_rollout of no rollout: ${text(missing)}`);
  say("reads validated against their output schemas");

  // Resources: the catalog and the fleet, read as this caller; the rollout template.
  const { resources } = await bounded("resources/list", client.listResources());
  const uris = resources.map((r) => r.uri).sort();
  check(uris.includes("ota://firmware") && uris.includes("ota://fleet"), `resources: ${uris}`);
  const { resourceTemplates } = await bounded("resources/templates/list", client.listResourceTemplates());
  check(resourceTemplates.some((t) => t.uriTemplate === "ota://rollouts/{id}"), `templates: ${JSON.stringify(resourceTemplates)}`);
  for (const uri of ["ota://firmware", "ota://fleet"]) {
    const read = await bounded(`read ${uri}`, client.readResource({ uri }));
    const c = read.contents?.[0];
    check(c?.mimeType === "application/json", `${uri} is JSON: ${JSON.stringify(c)}`);
    const body = JSON.parse(c.text);
    check(uri !== "ota://fleet" || body.device_types?.some((t) => t.device_type === "pet_feeder"), `${uri}: ${c.text}`);
    check(uri !== "ota://firmware" || body.firmware?.length > 0, `${uri}: ${c.text}`);
  }
  say("resources:", uris.join(", "), "| templates:", resourceTemplates.map((t) => t.uriTemplate).join(", "));

  // Prompts: the safe rollout and rollback workflows, with arguments.
  const { prompts } = await bounded("prompts/list", client.listPrompts());
  const promptNames = prompts.map((p) => p.name).sort();
  check(promptNames.includes("safe_rollout") && promptNames.includes("rollback"), `prompts: ${promptNames}`);
  const safe = await bounded(
    "prompts/get",
    client.getPrompt({ name: "safe_rollout", arguments: { device_type: "pet_feeder", version: "latest" } }),
  );
  const safeText = safe.messages.map((m) => m.content?.text ?? "").join(" ");
  check(safeText.includes("plan_update") && safeText.includes("start_rollout") && safeText.includes("plan_id"), safeText);
  say("prompts:", promptNames.join(", "));

  const args = { device_types: ["pet_feeder"], version: "latest" };
  let plan;
  try {
    plan = await bounded("plan_update", client.callTool({ name: "plan_update", arguments: args }));
  } catch (e) {
    // A structuredContent that does not match the output schema is a failure, never a refusal.
    check(!/output schema|structured content/i.test(e.message), `plan_update: ${e.message}`);
    plan = { isError: true, content: [{ type: "text", text: `protocol error: ${e.message}` }] };
  }
  if (role === "viewer") {
    check(plan.isError, `a viewer planned an update: ${JSON.stringify(plan.structuredContent)}`);
    check(/operator|forbidden|not allowed|role/i.test(text(plan)), `the refusal says why: ${text(plan)}`);
    say("viewer: plan_update refused:", text(plan));
  } else {
    check(!plan.isError, `plan_update: ${text(plan)}`);
    const p = plan.structuredContent;
    check(typeof p?.plan_id === "string" && p.plan_id.length > 0, `plan_update returns a plan_id: ${JSON.stringify(p)}`);
    const deployments = p.plan?.deployments ?? p.deployments ?? [];
    say("plan:", p.message, "| plan_id", p.plan_id, "| deployments", deployments.length);
  }
  await client.close();
  say("passed");
}

main().catch((e) => {
  say("FAILED:", e?.stack ?? e);
  process.exit(1);
});
