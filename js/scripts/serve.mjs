// A tiny static server for the browser test, the demo and the benchmark, bound to 127.0.0.1. It
// serves only: this package's src/, demo/ and test/; the two dependencies' dist/ folders the
// browser needs; and the bundle folders it is given (at /bundles/<name>/). It sends the headers
// that make a page cross-origin isolated, which wasm threads need.
//
//   node js/scripts/serve.mjs [--port 8080] [--refs DIR] NAME=BUNDLE_DIR...
//   then open http://127.0.0.1:8080/demo/?bundle=/bundles/NAME/
import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const JS_DIR = fileURLToPath(new URL("..", import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json; charset=utf-8", ".css": "text/css; charset=utf-8", ".wasm": "application/wasm",
  ".png": "image/png", ".svg": "image/svg+xml",
};

/**
 * Starts the server; `bundles`: {name: folder}; `refs`: a folder served at /refs/. Resolves to
 * {url, close()} once listening (port 0: any free port).
 */
export async function serve({ bundles = {}, refs = null, port = 0 } = {}) {
  const roots = {
    "/src/": join(JS_DIR, "src"),
    "/demo/": join(JS_DIR, "demo"),
    "/test/": join(JS_DIR, "test"),
    "/node_modules/onnxruntime-web/dist/": join(JS_DIR, "node_modules/onnxruntime-web/dist"),
    "/node_modules/@huggingface/tokenizers/dist/": join(JS_DIR, "node_modules/@huggingface/tokenizers/dist"),
    ...Object.fromEntries(Object.entries(bundles).map(([name, dir]) => [`/bundles/${name}/`, resolve(dir)])),
    ...(refs ? { "/refs/": resolve(refs) } : {}),
  };
  const server = createServer(async (request, response) => {
    const headers = {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
      "Cache-Control": "no-store",
    };
    const refuse = (status) => {
      response.writeHead(status, { ...headers, "Content-Type": "text/plain" });
      response.end(`${status}\n`);
    };
    try {
      if (request.method !== "GET" && request.method !== "HEAD") return refuse(405);
      const path = decodeURIComponent(new URL(request.url, "http://127.0.0.1").pathname);
      const prefix = Object.keys(roots).find((p) => path.startsWith(p));
      if (!prefix || path.split("/").some((part) => part === ".." || part.startsWith("."))) return refuse(404);
      const root = await realpath(roots[prefix]);
      let file = await realpath(join(root, path.slice(prefix.length) || "."));
      if (file !== root && !file.startsWith(root + sep)) return refuse(404);
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const info = await stat(file);
      response.writeHead(200, {
        ...headers,
        "Content-Type": TYPES[extname(file)] ?? "application/octet-stream",
        "Content-Length": info.size,
      });
      if (request.method === "HEAD") return response.end();
      createReadStream(file).pipe(response);
    } catch {
      refuse(404);
    }
  });
  await new Promise((done) => server.listen(port, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((done) => server.close(done)),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (name) => {
    const at = args.indexOf(name);
    return at >= 0 ? args.splice(at, 2)[1] : undefined;
  };
  const port = Number(option("--port") ?? 8080);
  const refs = option("--refs") ?? null;
  const bundles = Object.fromEntries(args.map((a) => a.split(/=(.*)/s).slice(0, 2)));
  const { url } = await serve({ bundles, refs, port });
  console.log(`serving on ${url}: demo ${url}/demo/${Object.keys(bundles).length ? `?bundle=/bundles/${Object.keys(bundles)[0]}/` : ""}`);
}
