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

const { createHttpsServer } = require("@vercel/cosmosdb-server");
const server = createHttpsServer({
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
  keepAlive: true,
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), "127.0.0.1", () => {
  console.log(`cosmosdb-server listening on https://127.0.0.1:${port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
