// TEST ONLY: load workflows into ComfyUI's real frontend in headless Debian chromium and report what it sees.
//
//   node check_workflows.mjs URL OUT_DIR WORKFLOW.json [...]
//
// For every workflow: the node types the frontend does not know, the API prompt of app.graphToPrompt(), and a
// screenshot (OUT_DIR/<name>.png). Results go to OUT_DIR/results.json. Never downloads a browser: it drives
// /usr/bin/chromium (override with CHROMIUM).
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [url, outDir, ...files] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(outDir, "profile-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 2000, height: 1150 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
  ],
});
const page = context.pages()[0] || (await context.newPage());
const consoleErrors = [];
page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
await page.goto(url, { waitUntil: "load", timeout: 60000 });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 60000 });
// Dismiss first-run banners/dialogs if any (no network: nothing else to do with them).
await page.keyboard.press("Escape");

const results = [];
for (const file of files) {
  const name = path.basename(file, ".json");
  const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
  const result = await page.evaluate(async (wf) => {
    const known = window.LiteGraph.registered_node_types;
    const missing = [...new Set(wf.nodes.map((n) => n.type).filter((t) => !known[t]))];
    await window.app.loadGraphData(wf);
    const graph = window.app.graph;
    const nodes = graph._nodes || graph.nodes || [];
    const prompt = await window.app.graphToPrompt();
    // Fit the graph into the view, but never below 0.6 zoom (the canvas stops drawing node text there).
    const canvas = window.app.canvas;
    if (canvas && canvas.ds && nodes.length) {
      let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
      for (const n of nodes) {
        x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
      }
      const el = canvas.canvas;
      const scale = Math.max(0.6, Math.min(1.0, (el.width - 80) / (x1 - x0), (el.height - 140) / (y1 - y0)));
      canvas.ds.scale = scale;
      canvas.ds.offset = [-x0 + 60 / scale, -y0 + 100 / scale];
      canvas.setDirty(true, true);
    }
    return { missing, nodeCount: nodes.length, output: prompt.output };
  }, workflow);
  await page.waitForTimeout(300);
  // Close any dialog the load opened (e.g. a missing-models notice) before the screenshot.
  await page.keyboard.press("Escape");
  await page.screenshot({ path: path.join(outDir, `${name}.png`) });
  results.push({ file, name, ...result });
}
fs.writeFileSync(path.join(outDir, "results.json"), JSON.stringify({ results, consoleErrors }, null, 1));
await context.close();
