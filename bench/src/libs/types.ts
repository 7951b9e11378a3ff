/** Where a bench server listens, or where a client connects. */
export type Endpoint = { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

/** The params of the `echo` method, the same for every library. */
export interface EchoParams {
  a: number;
  b: string;
}

/** What a server shares with its child-process host: the notification count. */
export interface ServerState {
  readonly count: number;
  tick(): void;
}

/** A listening bench server. */
export interface RunningServer {
  /** The bound endpoint (a TCP port 0 resolved to the real port). */
  endpoint: Endpoint;
  close(): Promise<void>;
}

/** One client connection, seen through the four operations the scenarios use. */
export interface BenchClient {
  echo(params: EchoParams): Promise<EchoParams>;
  echoText(text: string): Promise<string>;
  /** Sends one notification; may resolve when it was written. */
  tick(n: number): void | Promise<void>;
  /** Resolves when the client's write buffer has room again, if it is over its mark. */
  drained?(): Promise<void> | undefined;
  close(): Promise<void>;
}

/** One library under test: a server half and a client half over the same wire. */
export interface Adapter {
  serve(listen: Endpoint, state: ServerState): Promise<RunningServer>;
  connect(endpoint: Endpoint): Promise<BenchClient>;
}
