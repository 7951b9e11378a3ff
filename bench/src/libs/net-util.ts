import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import type { Endpoint } from "./types.js";

/** Opens a `net.Server` on the endpoint (port 0 allowed) and returns the bound endpoint. */
export async function listenNet(
  listen: Endpoint,
  onSocket: (socket: Socket) => void,
): Promise<{ server: Server; endpoint: Endpoint; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    if (listen.kind === "tcp") socket.setNoDelay(true);
    onSocket(socket);
  });
  // Idle scenarios hold up to 10,000 connections; the default backlog (511) drops bursts.
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (listen.kind === "unix") server.listen({ path: listen.path, backlog: 4096 }, resolve);
    else server.listen({ host: listen.host, port: listen.port, backlog: 4096 }, resolve);
  });
  const endpoint: Endpoint =
    listen.kind === "unix"
      ? listen
      : { kind: "tcp", host: listen.host, port: (server.address() as AddressInfo).port };
  return {
    server,
    endpoint,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects a socket to the endpoint (Nagle off on TCP). */
export function connectNet(endpoint: Endpoint): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      endpoint.kind === "unix"
        ? connect({ path: endpoint.path })
        : connect({ host: endpoint.host, port: endpoint.port, noDelay: true });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
  });
}
