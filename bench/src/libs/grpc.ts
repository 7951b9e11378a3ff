import {
  Client,
  credentials,
  Server,
  ServerCredentials,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServiceDefinition,
  type sendUnaryData,
} from "@grpc/grpc-js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// @grpc/grpc-js with a generic service definition whose messages are JSON (no protobuf
// codegen): unary calls over HTTP/2. gRPC has no notifications; `tick` is its idiomatic
// fire-and-forget, a client-streaming call carrying every tick of the connection.

const serialize = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const deserialize = (bytes: Buffer): any => JSON.parse(bytes.toString());

function rpc(path: string, requestStream: boolean) {
  return {
    path,
    requestStream,
    responseStream: false,
    requestSerialize: serialize,
    requestDeserialize: deserialize,
    responseSerialize: serialize,
    responseDeserialize: deserialize,
  };
}

const service = {
  echo: rpc("/bench.Bench/Echo", false),
  echoText: rpc("/bench.Bench/EchoText", false),
  tick: rpc("/bench.Bench/Tick", true),
  count: rpc("/bench.Bench/Count", false),
} satisfies ServiceDefinition;

function target(endpoint: Endpoint): string {
  return endpoint.kind === "unix" ? `unix:${endpoint.path}` : `${endpoint.host}:${endpoint.port}`;
}

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const server = new Server({
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    });
    server.addService(service, {
      echo: (call: ServerUnaryCall<EchoParams, EchoParams>, cb: sendUnaryData<EchoParams>) =>
        cb(null, call.request),
      echoText: (call: ServerUnaryCall<string, string>, cb: sendUnaryData<string>) =>
        cb(null, call.request),
      count: (_call: ServerUnaryCall<null, number>, cb: sendUnaryData<number>) =>
        cb(null, state.count),
      tick: (call: ServerReadableStream<{ n: number }, null>, cb: sendUnaryData<null>) => {
        call.on("data", () => state.tick());
        call.on("end", () => cb(null, null));
        call.on("error", () => {});
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(target(listen), ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const endpoint: Endpoint = listen.kind === "unix" ? listen : { ...listen, port };
    return {
      endpoint,
      close: async () => {
        server.forceShutdown();
      },
    };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    // A local subchannel pool gives each client its own HTTP/2 connection (the idle scenario
    // opens thousands from one process; the global pool would share one).
    const client = new Client(target(endpoint), credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    });
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())),
    );
    const unary = <T>(path: string, arg: unknown): Promise<T> =>
      new Promise((resolve, reject) => {
        client.makeUnaryRequest<unknown, T>(path, serialize, deserialize, arg, (err, res) =>
          err ? reject(err) : resolve(res as T),
        );
      });
    let ticks: ReturnType<Client["makeClientStreamRequest"]> | undefined;
    let drain: Promise<void> | undefined;
    return {
      echo: (p) => unary<EchoParams>(service.echo.path, p),
      echoText: (s) => unary<string>(service.echoText.path, s),
      tick: (n) => {
        ticks ??= client.makeClientStreamRequest(
          service.tick.path,
          serialize,
          deserialize,
          () => {},
        );
        if (!ticks.write({ n })) {
          const stream = ticks;
          drain ??= new Promise<void>((resolve) =>
            stream.once("drain", () => {
              drain = undefined;
              resolve();
            }),
          );
          return drain;
        }
      },
      close: async () => {
        ticks?.end();
        client.close();
      },
    };
  },
};
