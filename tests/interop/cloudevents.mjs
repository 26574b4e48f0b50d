// Another service, written in JavaScript with the official NATS client, talking to
// wis2l-core in CloudEvents' NATS binding (binary content mode). Driven by
// tests/test_events_interop.py:
//
//   node cloudevents.mjs publish <server> <subject> <event-json>
//       publishes the event's documented fields as the body, WITHOUT a "type" field, with
//       the ce-* headers; prints {"seq": <stream sequence>}
//   node cloudevents.mjs read <server> <stream> <subject>
//       reads the last message on <subject>, checks it is a binary-mode CloudEvent whose
//       headers agree with its body, and prints {"headers": {...}, "body": {...}}
//
// Exits 1 with the reason on stderr when a check fails.
import { connect, headers } from "nats";

const [mode, server, ...rest] = process.argv.slice(2);

function fail(reason) {
  console.error(`interop: ${reason}`);
  process.exit(1);
}

const nc = await connect({ servers: server, timeout: 5000 });
try {
  if (mode === "publish") {
    const [subject, json] = rest;
    const event = JSON.parse(json);
    if ("type" in event) fail("the test should publish a body without a type");
    const h = headers();
    h.set("ce-specversion", "1.0");
    h.set("ce-type", `wis2l.${subject.split(".").slice(1).join(".")}`);
    h.set("ce-source", "/interop/javascript");
    h.set("ce-id", event.id);
    h.set("ce-time", event.occurred_at);
    h.set("content-type", "application/json");
    const ack = await nc.jetstream().publish(subject, new TextEncoder().encode(json), {
      headers: h,
      msgID: event.id,
    });
    console.log(JSON.stringify({ seq: ack.seq }));
  } else if (mode === "read") {
    const [stream, subject] = rest;
    const jsm = await nc.jetstreamManager();
    const msg = await jsm.streams.getMessage(stream, { last_by_subj: subject });
    const body = JSON.parse(new TextDecoder().decode(msg.data));
    const got = {};
    for (const [key, values] of msg.header) got[key] = values[0];
    const want = {
      "ce-specversion": "1.0",
      "ce-type": `wis2l.${body.type}`,
      "ce-id": body.id,
      "ce-time": body.occurred_at,
      "content-type": "application/json",
      "Nats-Msg-Id": body.id,
    };
    for (const [key, value] of Object.entries(want)) {
      if (got[key] !== value) fail(`header ${key} is ${got[key]}, expected ${value}`);
    }
    if (!got["ce-source"] || !got["ce-source"].startsWith("/")) {
      fail(`ce-source ${got["ce-source"]} is not a URI reference`);
    }
    if (Number.isNaN(Date.parse(got["ce-time"]))) fail(`ce-time ${got["ce-time"]} is not a time`);
    console.log(JSON.stringify({ headers: got, body }));
  } else {
    fail(`unknown mode ${mode}`);
  }
} finally {
  await nc.close();
}
