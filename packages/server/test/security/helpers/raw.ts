import { RawClient } from "../../helpers/raw-socket.js";
import type { Cleanups } from "./cleanup.js";

export { frame, header } from "../../helpers/raw-socket.js";

/**
 * A hostile or naive peer on a real socket (the shared {@link RawClient}), destroyed at
 * the test's cleanup.
 */
export type RawSocket = RawClient;

export const RawSocket = {
  /** Connects to `unix:/path` or `tcp://host:port`; the socket is destroyed at cleanup. */
  async connect(cleanups: Cleanups, address: string): Promise<RawSocket> {
    const client = await RawClient.connect(address);
    cleanups.add(client.socket, (s) => s.destroy());
    return client;
  },
};
