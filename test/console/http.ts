/** Talking to the console's API the way a script would: JSON over HTTP, and the SSE stream. */
import http from "node:http";

export interface ApiReply<T = Record<string, unknown>> {
  status: number;
  body: T;
}

export interface ApiClient {
  get<T = Record<string, unknown>>(path: string, headers?: Record<string, string>): Promise<ApiReply<T>>;
  post<T = Record<string, unknown>>(
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<ApiReply<T>>;
}

export function request(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
): Promise<ApiReply<never> & { text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed: never;
        try {
          parsed = JSON.parse(text) as never;
        } catch {
          parsed = undefined as never;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

export function apiClient(base: string, token?: string): ApiClient {
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  return {
    get: (path, headers = {}) => request(new URL(path, base).href, "GET", { ...auth, ...headers }),
    post: (path, body = {}, headers = {}) =>
      request(
        new URL(path, base).href,
        "POST",
        { "content-type": "application/json", ...auth, ...headers },
        JSON.stringify(body),
      ),
  };
}

/** Collects the SSE events of /api/events until `close()`. */
export function eventStream(
  base: string,
  token?: string,
): { events: Array<{ event: string; data: unknown }>; close(): void } {
  const events: Array<{ event: string; data: unknown }> = [];
  const url = new URL("/api/events", base);
  if (token) url.searchParams.set("access_token", token);
  let buffer = "";
  const req = http.get(url, (res) => {
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    });
  });
  req.on("error", () => undefined);
  return { events, close: () => req.destroy() };
}
