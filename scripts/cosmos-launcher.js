#!/usr/bin/env node
// Starts @vercel/cosmosdb-server 1.0.1 (an in-memory Cosmos DB server for tests) over HTTPS with
// our own certificate, keep-alive on, and the shims that make it answer the azure_data_cosmos
// 1.x SDK the way Cosmos DB does. Test infrastructure only (scripts/services starts it).
//
//   node scripts/cosmos-launcher.js PORT CERT.pem KEY.pem      (NODE_PATH = its node_modules)
//
// Shims (each a wrapper around one of the package's handlers, installed before its routing
// table is built):
//   1. partition key ranges: range ids as strings (the SDK rejects numbers: 503/20305);
//   2. a point read of a missing document answers 404 (the package crashes with 500);
//   3. queries sent to one partition key range are allowed like cross-partition queries;
//   4. transactional batch: the partition key header is copied into each operation;
//   5. (plain-HTTP mode only, unused here: we serve HTTPS);
//   6. query plans: a pass-through plan over the single range (the package cannot plan), so
//      ORDER BY, TOP and single-partition queries work.
//
// In front of the package's request handler, a gate that makes the same server a minimal
// Microsoft Entra ID token endpoint and checks Entra ID (AAD) authorization, so the workload
// identity path of the Cosmos DB store is tested for real:
//   7. POST /<tenant>/oauth2/v2.0/token (what azure_identity's WorkloadIdentityCredential sends
//      to AZURE_AUTHORITY_HOST: grant_type=client_credentials, client_assertion_type=jwt-bearer,
//      client_assertion = the federated token file, client_id, scope) answers a token response
//      with a token of its own; a missing or blank assertion gets 401 invalid_client, other
//      missing fields 400 invalid_request (Entra's error shape);
//   8. a request authorized as `type=aad&ver=1.0&sig=TOKEN` gets 401 unless this server issued
//      TOKEN; every other request (key-signed `type=master` ones included) passes as before,
//      its signature unchecked;
//   9. GET /__test/auth answers what was seen (JSON): requests per authorization type in total
//      and per database (by the /dbs/<id> of the path), token requests per client id, and
//      managed identity token requests (10) per client id (`system` without one);
//  10. GET /msi/token, a managed identity endpoint like the one App Service, Azure Functions and
//      Container Apps give a process in IDENTITY_ENDPOINT (azure_identity's App Service source:
//      api-version=2019-08-01, resource, optional client_id, header X-IDENTITY-HEADER). The
//      secret it expects is IDENTITY_HEADER of the launcher's environment (scripts/services
//      sets it); a missing header gets 400, a wrong one 401, as the real endpoint answers. It
//      issues a token the check (8) accepts, expires_on in epoch seconds as a string.
"use strict";

const fs = require("fs");
const path = require("path");

const [port, certFile, keyFile] = process.argv.slice(2);
if (!port || !certFile || !keyFile) {
  console.error("usage: cosmos-launcher.js PORT CERT.pem KEY.pem");
  process.exit(2);
}

const lib = path.dirname(require.resolve("@vercel/cosmosdb-server"));
const handler = (name) => require(path.join(lib, "handler", name));

function wrap(name, around) {
  const mod = handler(name);
  const original = mod.default;
  mod.default = around(original);
}

// 1. Range ids as strings.
wrap("read-partition-key-ranges", (original) => async (...args) => {
  const body = await original(...args);
  if (body && Array.isArray(body.PartitionKeyRanges)) {
    for (const r of body.PartitionKeyRanges) {
      r.id = String(r.id);
      if (Array.isArray(r.parents)) r.parents = r.parents.map(String);
    }
  }
  return body;
});

// 2. Missing document: 404, not a crash.
wrap("read-document", (original) => (account, req, res, params) => {
  try {
    return original(account, req, res, params);
  } catch (err) {
    if (err instanceof TypeError) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
    throw err;
  }
});

// 3 and 6. Range-scoped queries; query plans.
const PLAN = (query) => ({
  partitionedQueryExecutionInfoVersion: 2,
  queryInfo: {
    distinctType: "None",
    top: null,
    offset: null,
    limit: null,
    orderBy: [],
    orderByExpressions: [],
    groupByExpressions: [],
    groupByAliases: [],
    aggregates: [],
    groupByAliasToAggregateType: {},
    rewrittenQuery: "",
    hasSelectValue: false,
    dCountInfo: null,
    hasNonStreamingOrderBy: false,
  },
  queryRanges: [{ min: "", max: "FF", isMinInclusive: true, isMaxInclusive: false }],
  query,
});
wrap("query-documents", (original) => async (account, req, res, params) => {
  const isPlan = String(req.headers["x-ms-cosmos-is-query-plan-request"] || "").toLowerCase() === "true";
  if (isPlan) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    let query = "";
    try {
      query = JSON.parse(Buffer.concat(chunks).toString("utf8")).query || "";
    } catch (_) {
      // an unreadable body still gets the pass-through plan
    }
    return PLAN(query);
  }
  if (req.headers["x-ms-documentdb-partitionkeyrangeid"] !== undefined) {
    req.headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  return original(account, req, res, params);
});

// 4. Batch: the partition key of the request header in each operation.
wrap("batch-documents", (original) => async (account, req, res, params) => {
  const key = req.headers["x-ms-documentdb-partitionkey"];
  if (key) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const ops = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    for (const op of ops) if (op.partitionKey === undefined) op.partitionKey = key;
    const { Readable } = require("stream");
    const replay = Readable.from([Buffer.from(JSON.stringify(ops))]);
    replay.headers = req.headers;
    replay.method = req.method;
    replay.url = req.url;
    return original(account, replay, res, params);
  }
  return original(account, req, res, params);
});

// 7 to 10. The Entra ID token endpoints, the AAD check and the counts.
const crypto = require("crypto");
const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const issued = new Set();
const seen = { requests: { key: 0, aad: 0, rejected: 0, other: 0 }, databases: {}, clients: {}, managedIdentity: {} };

function json(res, status, body) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify(body));
}

// Entra's error shape, description with the trace lines real Entra appends.
function entraError(res, status, error, code, description) {
  const traceId = crypto.randomUUID();
  json(res, status, {
    error,
    error_description: `AADSTS${code}: ${description}\r\nTrace ID: ${traceId}\r\nTimestamp: ${new Date().toISOString()}`,
    error_codes: [code],
    timestamp: new Date().toISOString(),
    trace_id: traceId,
    correlation_id: crypto.randomUUID(),
  });
}

async function token(req, res, tenant) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
  const clientId = form.get("client_id") || "";
  const client = (seen.clients[clientId] ||= { tenant, scopes: [], issued: 0, refused: 0 });
  const refuse = (status, error, code, description) => {
    client.refused += 1;
    entraError(res, status, error, code, description);
  };
  if (form.get("grant_type") !== "client_credentials") {
    return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
  }
  if (!clientId) return refuse(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
  if (!form.get("scope")) return refuse(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.");
  if (form.get("client_assertion_type") !== ASSERTION_TYPE) {
    return refuse(400, "invalid_request", 50027, "Invalid client_assertion_type.");
  }
  const assertion = (form.get("client_assertion") || "").trim();
  if (!assertion) return refuse(401, "invalid_client", 50027, "JWT token is invalid or malformed.");
  const access = `aad-${crypto.createHash("sha256").update(assertion).digest("hex").slice(0, 12)}-${crypto.randomBytes(16).toString("hex")}`;
  issued.add(access);
  client.tenant = tenant;
  client.issued += 1;
  if (!client.scopes.includes(form.get("scope"))) client.scopes.push(form.get("scope"));
  json(res, 200, { token_type: "Bearer", expires_in: 3599, ext_expires_in: 3599, access_token: access });
}

const MSI_SECRET = process.env.IDENTITY_HEADER || "";

function managedIdentityToken(req, res, query) {
  const clientId = query.get("client_id") || "";
  const resource = query.get("resource") || "";
  const identity = (seen.managedIdentity[clientId || "system"] ||= { resources: [], issued: 0, refused: 0 });
  const refuse = (status, message) => {
    identity.refused += 1;
    json(res, status, { statusCode: status, message });
  };
  const secret = req.headers["x-identity-header"];
  if (secret === undefined) return refuse(400, "The X-IDENTITY-HEADER header is missing.");
  if (!MSI_SECRET || secret !== MSI_SECRET) return refuse(401, "The X-IDENTITY-HEADER header is not valid.");
  if (query.get("api-version") !== "2019-08-01") return refuse(400, "Unsupported api-version.");
  if (!resource) return refuse(400, "The resource parameter is missing.");
  const access = `aad-msi-${crypto.randomBytes(16).toString("hex")}`;
  issued.add(access);
  identity.issued += 1;
  if (!identity.resources.includes(resource)) identity.resources.push(resource);
  const body = { access_token: access, expires_on: String(Math.floor(Date.now() / 1000) + 3599), resource, token_type: "Bearer" };
  if (clientId) body.client_id = clientId;
  json(res, 200, body);
}

// The authorization type of a Cosmos DB request and, for AAD, whether this server issued its token.
function authorization(req) {
  const header = req.headers["authorization"];
  if (!header) return "other";
  let decoded = header;
  try {
    decoded = decodeURIComponent(header);
  } catch (_) {
    // not URL-encoded: read as it is
  }
  const fields = new URLSearchParams(decoded);
  switch (fields.get("type")) {
    case "master":
      return "key";
    case "aad":
      return issued.has(fields.get("sig")) ? "aad" : "rejected";
    default:
      return "other";
  }
}

function count(req, kind) {
  seen.requests[kind] += 1;
  const m = /^\/dbs\/([^/?]+)/.exec(req.url);
  if (m) {
    const db = decodeURIComponent(m[1]);
    const counts = (seen.databases[db] ||= { key: 0, aad: 0, rejected: 0, other: 0 });
    counts[kind] += 1;
  }
}

const { createHttpsServer } = require("@vercel/cosmosdb-server");
const server = createHttpsServer({
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
  keepAlive: true,
});
const cosmos = server.listeners("request");
server.removeAllListeners("request");
server.on("request", (req, res) => {
  const url = req.url.split("?")[0];
  const tokenPath = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url);
  if (tokenPath && req.method === "POST") {
    token(req, res, decodeURIComponent(tokenPath[1])).catch((err) => json(res, 500, { error: String(err) }));
    return;
  }
  if (url === "/msi/token" && req.method === "GET") {
    return managedIdentityToken(req, res, new URLSearchParams(req.url.slice(url.length + 1)));
  }
  if (url === "/__test/auth" && req.method === "GET") return json(res, 200, seen);
  const kind = authorization(req);
  count(req, kind);
  if (kind === "rejected") {
    return json(res, 401, {
      code: "Unauthorized",
      message: "The input authorization token can't serve the request. The wrong key is being used or the token was not issued by this server.",
    });
  }
  for (const handle of cosmos) handle.call(server, req, res);
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), "127.0.0.1", () => {
  console.log(`cosmosdb-server listening on https://127.0.0.1:${port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
