import { connect, createServer, defineContract, method, notification } from "ezipc";
import { z } from "zod";
import type { Adapter, BenchClient, Endpoint, ServerState } from "./types.js";

// ezipc as a user would write it: one contract, library defaults, validation on or off.

const echoParams = z.object({ a: z.number(), b: z.string() });

const contract = defineContract({
  server: {
    echo: method({ params: echoParams, result: echoParams }),
    echoText: method({ params: z.tuple([z.string()]), result: z.string() }),
    tick: notification({ params: z.object({ n: z.number() }) }),
    count: method({ result: z.number() }),
  },
});

function address(endpoint: Endpoint): string {
  return endpoint.kind === "unix"
    ? `unix:${endpoint.path}`
    : `tcp://${endpoint.host}:${endpoint.port}`;
}

function parseAddress(text: string, listen: Endpoint): Endpoint {
  if (listen.kind === "unix") return listen;
  const match = /:(\d+)\/?$/.exec(text);
  if (!match?.[1]) throw new Error(`cannot read the port of ezipc address ${text}`);
  return { ...listen, port: Number(match[1]) };
}

/** The ezipc row: `validate` is passed to both `createServer` and `connect`. */
export function ezipcAdapter(validate: boolean): Adapter {
  return {
    async serve(listen: Endpoint, state: ServerState) {
      const server = createServer(
        contract,
        {
          echo: (p) => p,
          echoText: ([s]) => s,
          tick: () => {
            state.tick();
          },
          count: () => state.count,
        },
        { validate },
      );
      await server.listen(address(listen));
      return {
        endpoint: parseAddress(String(server.address), listen),
        close: () => server.close(),
      };
    },

    async connect(endpoint: Endpoint): Promise<BenchClient> {
      const client = await connect(contract, address(endpoint), { validate });
      return {
        echo: (p) => client.call("echo", p),
        echoText: (s) => client.call("echoText", [s]),
        tick: (n) => client.notify("tick", { n }),
        close: () => client.close(),
      };
    },
  };
}

export const adapter: Adapter = ezipcAdapter(true);
export const adapterNoValidation: Adapter = ezipcAdapter(false);
