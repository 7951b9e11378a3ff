// The server half of one library under test, run in its own process by the bench.
// argv: <library id> <unix|tcp> <socket dir>
import { join } from "node:path";
import { fdLimit } from "./fd-limit.js";
import { serveControl } from "./ipc.js";
import { findLibrary } from "./libs/index.js";
import type { Endpoint, RunningServer, ServerState } from "./libs/types.js";

const [libId = "", transport = "unix", dir = "/tmp"] = process.argv.slice(2);

let count = 0;
let target = Number.POSITIVE_INFINITY;
let reached: (() => void) | undefined;
const state: ServerState = {
  get count() {
    return count;
  },
  tick() {
    count++;
    if (count >= target && reached) {
      const done = reached;
      reached = undefined;
      done();
    }
  },
};

let server: RunningServer | undefined;

const gc = (globalThis as { gc?: () => void }).gc;

serveControl(
  async () => {
    const lib = findLibrary(libId);
    if (!lib) throw new Error(`unknown library ${libId}`);
    const adapter = await lib.load();
    const listen: Endpoint =
      transport === "unix"
        ? { kind: "unix", path: join(dir, `${lib.id}-${process.pid}.sock`) }
        : { kind: "tcp", host: "127.0.0.1", port: 0 };
    server = await adapter.serve(listen, state);
    return { endpoint: server.endpoint, fdLimit: fdLimit() };
  },
  {
    cpu: () => {
      const usage = process.cpuUsage();
      return usage.user + usage.system;
    },
    reset: () => {
      count = 0;
      target = Number.POSITIVE_INFINITY;
      reached = undefined;
    },
    waitCount: (msg) => {
      const n = Number(msg.n);
      if (count >= n) return count;
      return new Promise<number>((resolve) => {
        target = n;
        reached = () => resolve(count);
      });
    },
    memory: async () => {
      // Several passes with turns of the loop between, so sockets' native memory and
      // weak callbacks settle before reading RSS.
      for (let i = 0; i < 3; i++) {
        gc?.();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return { ...process.memoryUsage(), gc: gc !== undefined };
    },
    close: async () => {
      await server?.close();
      server = undefined;
    },
  },
);
