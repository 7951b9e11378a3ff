// The second process of the idle scenario: opens connections to a bench server and holds them.
// argv: <library id> <endpoint JSON>
import { fdLimit } from "./fd-limit.js";
import { serveControl } from "./ipc.js";
import { findLibrary } from "./libs/index.js";
import type { Adapter, BenchClient, Endpoint } from "./libs/types.js";

const [libId = "", endpointJson = "{}"] = process.argv.slice(2);
const endpoint = JSON.parse(endpointJson) as Endpoint;
const held: BenchClient[] = [];
let adapter: Adapter | undefined;

serveControl(
  async () => {
    const lib = findLibrary(libId);
    if (!lib) throw new Error(`unknown library ${libId}`);
    adapter = await lib.load();
    return { fdLimit: fdLimit() };
  },
  {
    // Opens n more connections, `concurrency` at a time; each makes one call, so the server has
    // set up everything a connection costs it (handshakes, HTTP/2 settings, sessions).
    open: async (msg) => {
      const n = Number(msg.n);
      const concurrency = 64;
      let next = 0;
      const worker = async () => {
        while (next < n) {
          next++;
          const client = await adapter!.connect(endpoint);
          held.push(client);
          await client.echo({ a: 1, b: "hello" });
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
      return held.length;
    },
  },
);
