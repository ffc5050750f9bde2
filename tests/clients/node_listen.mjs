// node node_listen.mjs eventsource|undici URL TYPES: prints one JSON line per open, error
// and event that the EventSource of that npm package reports, until stdin closes.
import "./listen.js";

const [implementation, url, types] = process.argv.slice(2);
const EventSourceClass = implementation === "undici"
  ? (await import("undici")).EventSource
  : (await import("eventsource")).EventSource;
const source = globalThis.listenSSE(EventSourceClass, url, types.split(","), (line) => {
  process.stdout.write(JSON.stringify(line) + "\n");
});
process.stdin.resume();
process.stdin.on("end", () => { source.close(); process.exit(0); });
