// TEST ONLY: load workflows into ComfyUI's real frontend in headless Debian chromium and report what it sees.
//
//   node check_workflows.mjs URL OUT_DIR JOBS.json [PACK.json]
//
// JOBS.json: [{"file": PATH, "name": NAME, "screenshot": true|false, "pictures": true|false}, ...]. All workflows
// are loaded one after the other into one page. For each: the node types the frontend does not know, the API
// prompt of app.graphToPrompt() (or the error it threw), every HTTP answer >= 400 while it loaded and, when asked,
// a screenshot (OUT_DIR/<name>.png) and the pictures its image nodes show (once loaded: {value, width}). Results go
// to OUT_DIR/results.json with the frontend's version. The browser: launch.mjs.
//
// PACK.json (optional): first, in the same page, what the frontend shows of the pack (pack_ui.mjs: templates,
// missing models, help page, locale; in results.json as "pack"), then the files it lists under "placeholders"
// ([path, link target or null for an empty file]: the model files that had to be absent until then) are written
// and the frontend reloads its model lists, before the jobs.
import fs from "node:fs";
import path from "node:path";
import { closeOtherWorkflows, readImageNodes } from "./graph.mjs";
import { launch } from "./launch.mjs";
import { checkPackUi } from "./pack_ui.mjs";

const [url, outDir, jobsFile, packFile] = process.argv.slice(2);
const jobs = JSON.parse(fs.readFileSync(jobsFile, "utf8"));
const packConfig = packFile ? JSON.parse(fs.readFileSync(packFile, "utf8")) : null;
fs.mkdirSync(outDir, { recursive: true });
// permissions: the newer missing-models list copies its URLs to the clipboard. A large window for screenshots only:
// a smaller one draws less (the pack's checks page through what does not fit).
const shots = jobs.some((job) => job.screenshot);
const { context, page } = await launch(outDir, shots ? { width: 2000, height: 1150 } : { width: 1280, height: 800 },
  { permissions: ["clipboard-read", "clipboard-write"] });
const consoleErrors = [];
page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
const failed = [];  // HTTP answers >= 400 during the current job
page.on("response", (r) => { if (r.status() >= 400) failed.push({ status: r.status(), url: r.url() }); });
await page.goto(url, { waitUntil: "load", timeout: 60000 });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 60000 });
// Dismiss first-run banners/dialogs if any (no network: nothing else to do with them).
await page.keyboard.press("Escape");
const frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
let pack = null;
if (packConfig) {
  pack = await checkPackUi(page, packConfig);
  for (const [file, target] of packConfig.placeholders || []) {  // an empty file, or a link to target
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (target) fs.symlinkSync(target, file);
    else fs.writeFileSync(file, "");
  }
  await page.evaluate(async () => {
    await window.app.refreshComboInNodes();
    const toast = window.app.extensionManager.toast;  // "Node definitions updated": not in the screenshots
    if (toast && toast.removeAll) toast.removeAll();
  });
}

const results = [];
let small = false;
for (const job of jobs) {
  if (!job.screenshot && !small) {
    // The rest is compared, not looked at: a small window draws less.
    await page.setViewportSize({ width: 800, height: 600 });
    small = true;
  }
  const started = Date.now();
  failed.length = 0;
  const workflow = JSON.parse(fs.readFileSync(job.file, "utf8"));
  const result = await page.evaluate(async ({ wf, fit }) => {
    // Draw the canvas only for screenshots: redrawing big graphs every frame slows the loop down.
    if (window.app.canvas) window.app.canvas.pause_rendering = !fit;
    const known = window.LiteGraph.registered_node_types;
    const subgraphs = (wf.definitions && wf.definitions.subgraphs) || [];
    const types = [...wf.nodes, ...subgraphs.flatMap((sg) => sg.nodes || [])].map((n) => n.type);
    const ids = new Set(subgraphs.map((sg) => sg.id));
    const missing = [...new Set(types.filter((t) => !known[t] && !ids.has(t)))];
    try {
      await window.app.loadGraphData(wf);
      const graph = window.app.graph;
      const nodes = graph._nodes || graph.nodes || [];
      const prompt = await window.app.graphToPrompt();
      // Fit the graph into the view, but never below 0.6 zoom (the canvas stops drawing node text there).
      const canvas = window.app.canvas;
      if (fit && canvas && canvas.ds && nodes.length) {
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
    } catch (err) {
      return { missing, nodeCount: 0, output: null, error: String(err && err.stack || err) };
    }
  }, { wf: workflow, fit: !!job.screenshot });
  if (job.pictures) result.imageNodes = await readImageNodes(page);
  if (job.screenshot) {
    await page.waitForTimeout(300);
    // Close any dialog the load opened (e.g. a missing-models notice) before the screenshot.
    await page.keyboard.press("Escape");
    await page.screenshot({ path: path.join(outDir, `${job.name}.png`) });
  }
  await closeOtherWorkflows(page);
  results.push({ file: job.file, name: job.name, ms: Date.now() - started, failedRequests: [...failed], ...result });
}
fs.writeFileSync(path.join(outDir, "results.json"),
  JSON.stringify({ frontendVersion, pack, results, consoleErrors }, null, 1));
await context.close();
