// TEST ONLY: templates of the pack opened from ComfyUI's template browser and queued, as a user does.
//
//   node run_templates.mjs URL OUT_DIR CONFIG.json
//
// CONFIG.json: {"module": <pack folder>, "names": [template names], "nodeTypes": {name: sorted node types},
// "rewrite": {...}}. For each template: open the template browser (command
// Comfy.BrowseTemplates), pick the pack's category, type the template's name into the dialog's search box (paging
// through the grid where the card is not found that way), click its card, wait for a new workflow tab with the
// template's nodes and for its pictures, note every HTTP answer >= 400 (a missing input picture is a 404 on
// /api/view). Then it is queued (app.queuePrompt, what the Run button calls) and waited for (the
// prompt's history entry). The queued prompt goes through the test's rewrite on its way to /api/prompt (the text
// encoder and the sampler made small, the Redux loaders swapped for their TEST-ONLY stand-ins, as
// tests/test_examples.py's tiny_graph does; the model files themselves are the synthetic ones, under the published
// names); the ids of the nodes that ran are recorded. Results: OUT_DIR/template_runs.json.
import fs from "node:fs";
import path from "node:path";
import { closeOtherWorkflows, readImageNodes } from "./graph.mjs";
import { launch } from "./launch.mjs";

const [url, outDir, configFile] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configFile, "utf8"));
const rewrite = config.rewrite;
fs.mkdirSync(outDir, { recursive: true });
// A small window (the dialog still shows a row of cards): the page draws less while the templates open and run
// (alone on 2 cores: 55 -> 48 s for the 16, 10 CPU-seconds less than at 1600 x 1000).
const { context, page } = await launch(outDir, { width: 1000, height: 700 });
const bad = [];
page.on("response", (r) => { if (r.status() >= 400) bad.push({ status: r.status(), url: r.url() }); });
// The queued prompt, made small for the CPU (see tests/test_browser.py TEMPLATE_RUN_REWRITE): a node's
// class_type is swapped (its inputs replaced, or kept with keep_inputs) and inputs are set.
function small(prompt) {
  const out = JSON.parse(JSON.stringify(prompt));
  for (const node of Object.values(out)) {
    const r = rewrite.nodes[node.class_type];
    if (!r) continue;
    if (r.class_type) {
      node.class_type = r.class_type;
      if (!r.keep_inputs) node.inputs = {};
    }
    Object.assign(node.inputs, r.inputs || {});
  }
  return out;
}
let queueAnswer = null;  // the server's answer to the last queued prompt
let queued = null;  // the last prompt as the server got it: {node id: class_type}
await page.route("**/api/prompt", async (route) => {
  const request = route.request();
  if (request.method() !== "POST") return route.continue();
  const body = JSON.parse(request.postData());
  body.prompt = small(body.prompt);
  queued = Object.fromEntries(Object.entries(body.prompt).map(([id, node]) => [id, node.class_type]));
  const response = await route.fetch({ postData: JSON.stringify(body) });
  queueAnswer = { status: response.status(), text: await response.text() };
  await route.fulfill({ response });
});
await page.goto(url, { waitUntil: "load", timeout: 60000 });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 60000 });
await page.keyboard.press("Escape");
// The ids of the nodes the server runs (its "executing" messages; cached nodes are in the history entry instead);
// "executing" with no node ends a prompt.
await page.evaluate(() => {
  window.__aceExecuted = [];
  window.__aceDone = false;
  window.app.api.addEventListener("executing", (e) => {
    const d = e.detail;
    const id = d && typeof d === "object" ? d.node : d;
    if (id == null) window.__aceDone = true;
    else window.__aceExecuted.push(String(id));
  });
});

async function openFromBrowser(name) {
  await page.evaluate(() => {
    const store = window.app.extensionManager && window.app.extensionManager.workflow;
    window.__acePrevWorkflow = store ? store.activeWorkflow : null;
    return window.app.extensionManager.command.execute("Comfy.BrowseTemplates");
  });
  const dialog = page.getByRole("dialog");
  await dialog.getByText(config.module, { exact: true }).first().click({ timeout: 20000 });
  await dialog.locator("img[alt]").first().waitFor({ timeout: 20000 });
  const card = dialog.locator(`img[alt="${name}"]`);
  // Typed into the dialog's search box, as a user looks for a template by name (the grid then holds a few cards).
  // The dialog can still re-render (and empty the box) just after it opened: the name is typed again until the card
  // shows (at most 10 s).
  const search = dialog.getByPlaceholder(/search/i).first();
  if (await search.count()) {
    for (let i = 0; i < 40 && !(await card.count()); i++) {
      if ((await search.inputValue().catch(() => name)) !== name) await search.fill(name).catch(() => {});
      await page.waitForTimeout(250);
    }
    if (!(await card.count())) await search.fill("").catch(() => {});
  }
  // Without a search box, or when the card is not among the results: the grid shows the cards in view only, so it
  // is paged through from its top (the scrolling element is looked up each time: the grid may have re-rendered).
  const scrollGrid = (top) => dialog.locator("img[alt]").first().evaluate((img, top) => {
    let el = img.parentElement;
    while (el && !(el.scrollHeight > el.clientHeight + 1 && /auto|scroll/.test(getComputedStyle(el).overflowY))) {
      el = el.parentElement;
    }
    if (!el) return true;
    if (top) { el.scrollTop = 0; return false; }
    const end = el.scrollTop + el.clientHeight >= el.scrollHeight - 1;
    el.scrollTop += el.clientHeight * 0.8;
    return end;
  }, top, { timeout: 5000 }).catch(() => true);
  if (!(await card.count())) await scrollGrid(true);
  for (let atEnd = false; !(await card.count()) && !atEnd;) {
    atEnd = await scrollGrid(false);
    await page.waitForTimeout(300);
  }
  await card.first().click({ timeout: 10000 }).catch(async (err) => {
    const shown = await dialog.locator("img[alt]").evaluateAll((imgs) => imgs.map((i) => i.alt)).catch(() => []);
    const typed = await search.inputValue().catch(() => null);
    const where = `search box: ${JSON.stringify(typed)}; cards shown: ${JSON.stringify(shown)}`;
    throw new Error(`${err.message.split("\n")[0]} (${where})`);
  });
  await page.waitForFunction(() => !document.querySelector("[role=dialog] img[alt]"), null, { timeout: 20000 });
  // The dialog closes before the template is fetched and on the canvas: wait for a new workflow tab whose nodes
  // are the template's (several templates have the same node types, hence the tab).
  await page.waitForFunction((types) => {
    const store = window.app.extensionManager && window.app.extensionManager.workflow;
    if (store && store.activeWorkflow === window.__acePrevWorkflow) return false;
    const got = (window.app.graph._nodes || window.app.graph.nodes).map((n) => n.type).sort();
    return JSON.stringify(got) === JSON.stringify(types);
  }, config.nodeTypes[name], { timeout: 30000 });
}

async function queueAndWait() {
  const history = () => page.evaluate(async () => (await window.app.api.fetchApi("/history")).json());
  const known = Object.keys(await history());
  queueAnswer = null;
  queued = null;
  await page.evaluate(() => {
    window.__aceExecuted = [];
    window.__aceDone = false;
    return window.app.queuePrompt(0, 1);
  });
  for (let i = 0; i < 100 && !queueAnswer; i++) await page.waitForTimeout(100);
  if (!queueAnswer || queueAnswer.status !== 200) {
    throw new Error(`the server did not take the prompt: ${queueAnswer ? queueAnswer.text.slice(0, 1500) : "no answer"}`);
  }
  for (const deadline = Date.now() + 180000; Date.now() < deadline;) {
    await page.waitForTimeout(250);
    const fresh = Object.entries(await history()).find(([id, h]) => !known.includes(id) && h.status &&
      (h.status.completed || h.status.status_str === "error"));
    if (fresh) {
      // The history can answer before the last websocket messages arrive: wait for the end of the prompt there.
      await page.waitForFunction(() => window.__aceDone, null, { timeout: 10000 }).catch(() => {});
      return fresh[1];
    }
  }
  throw new Error("the queued template did not finish within 180 s");
}

const results = [];
for (const name of config.names) {
  const started = Date.now();
  bad.length = 0;
  const result = { name };
  try {
    // A loaded machine can leave the first click on a freshly opened dialog unanswered: close it and try again
    // (at most three times; the last failure is the result).
    for (let attempt = 1; ; attempt++) {
      try {
        await openFromBrowser(name);
        break;
      } catch (err) {
        if (attempt >= 3) throw err;
        (result.retries = result.retries || []).push(String(err.message || err).split("\n")[0].slice(0, 300));
        await page.keyboard.press("Escape");
        await page.waitForTimeout(1000);
      }
    }
    result.phases = { open: Date.now() - started };
    result.nodeCount = await page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes).length);
    result.imageNodes = await readImageNodes(page);
    result.phases.images = Date.now() - started - result.phases.open;
    const entry = await queueAndWait();
    result.phases.run = Date.now() - started - result.phases.open - result.phases.images;
    result.status = entry.status;
    result.outputs = entry.outputs;
    result.queued = queued;
    result.executed = [...new Set(await page.evaluate(() => window.__aceExecuted))];
    const cached = (entry.status.messages || []).find(([event]) => event === "execution_cached");
    result.cached = cached ? cached[1].nodes.map(String) : [];
  } catch (err) {
    result.error = String((err && err.stack) || err);
  }
  result.failedRequests = [...bad];
  result.ms = Date.now() - started;
  results.push(result);
  await page.keyboard.press("Escape");
  await closeOtherWorkflows(page);
}
fs.writeFileSync(path.join(outDir, "template_runs.json"), JSON.stringify(results, null, 1));
await context.close();
