// TEST ONLY: what ComfyUI's frontend shows of this pack, read from the page the way a user sees it (the DOM), for
// check_workflows.mjs (same page, before its workflow jobs):
//
// * templates: the template browser (command Comfy.BrowseTemplates), its category for the pack: the card titles,
//   each card's thumbnail (loaded, its size, the HTTP answer for /api/workflow_templates/<pack>/<name>.jpg), then
//   one card clicked: the workflow it loads and the missing models shown for it;
// * missingModels: each workflow loaded with its model files absent: the missing-models list the frontend shows,
//   one row per file with its folder, its download URL and whether the download button is enabled. Older
//   frontends show a dialog (setting Comfy.Workflow.ShowMissingModelsWarning, on for these two parts only); newer
//   ones a list in the issues panel, whose "Copy URL" button gives the URL (read from the clipboard);
// * help: a node's help page, opened from the node library's help button, or, where the library has none (the
//   redesigned library), from the node's Info tab;
// * localeNames, localeHelp: with Comfy.Locale switched (then back to en), the pack's node names the node library
//   lists, and the node's help page again.

import fs from "node:fs";
import { closeOtherWorkflows } from "./graph.mjs";

const SEARCH = ".comfy-vue-side-bar-header input";


async function setSetting(page, id, value) {
  await page.evaluate(([k, v]) => window.app.extensionManager.setting.set(k, v), [id, value]);
}

// The missing-models list for the graph just loaded: [{folder, name, url, download}] and which UI showed it.
async function readMissingModels(page) {
  const shown = await page.waitForFunction(() => {
    if (document.querySelector(".comfy-missing-models li")) return "dialog";
    if (document.querySelector("[data-testid=missing-model-importable-rows]")) return "issues";
    const details = [...document.querySelectorAll("button")].find((b) => b.innerText.trim() === "View details");
    if (details) details.click();  // the "N issues found" notice: open the issues panel
    return null;
  }, null, { timeout: 15000, polling: 250 }).then((h) => h.jsonValue()).catch(() => null);
  if (shown === "dialog") {
    const rows = await page.evaluate(() => [...document.querySelectorAll(".comfy-missing-models li")].map((li) => {
      const [folder, name] = li.innerText.split("\n")[0].split(" / ");
      const download = [...li.querySelectorAll("button")].find((b) => b.title && b.title.startsWith("http"));
      return { folder, name, url: download ? download.title : null, download: !!download && !download.disabled };
    }));
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => !document.querySelector(".comfy-missing-models"), null, { timeout: 5000 });
    return { ui: shown, rows };
  }
  if (shown === "issues") {
    // The frontend fills the list in steps (scan, then verification): read it once its length holds still.
    await page.waitForFunction(() => {
      const n = document.querySelectorAll("[data-testid=missing-model-importable-rows] > div").length;
      window.__aceRows = window.__aceRows && window.__aceRows.n === n ? { n, same: window.__aceRows.same + 1 } : { n, same: 0 };
      return window.__aceRows.same >= 3;
    }, null, { timeout: 10000, polling: 150 });
    const rows = [];
    const items = page.locator("[data-testid=missing-model-importable-rows] > div");
    for (let i = 0; i < (await items.count()); i++) {
      const item = items.nth(i);
      const [name, folder] = (await item.innerText()).split("\n").map((s) => s.trim());
      let url = null;
      const copy = item.getByRole("button", { name: "Copy URL" });
      if (await copy.count()) {
        await copy.click();
        url = await page.evaluate(() => navigator.clipboard.readText());
      }
      const download = item.locator("[data-testid=missing-model-download]");
      rows.push({ folder, name, url, download: (await download.count()) > 0 && (await download.isEnabled()) });
    }
    return { ui: shown, rows };
  }
  return { ui: null, rows: [] };
}

// The issues panel (newer frontends) closed, so that the next graph's list is read, not this one's.
async function closeIssuesPanel(page) {
  const rows = "[data-testid=missing-model-importable-rows]";
  if (!(await page.locator(rows).count())) return;
  await setSetting(page, "Comfy.RightSidePanel.IsOpen", false);
  await page.waitForFunction((sel) => !document.querySelector(sel), rows, { timeout: 5000 });
}

async function missingModels(page, workflows) {
  const out = [];
  for (const { file, name } of workflows) {
    const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
    await page.evaluate((wf) => window.app.loadGraphData(wf), workflow);
    out.push({ file, name, ...(await readMissingModels(page)) });
    await closeOtherWorkflows(page);
    await closeIssuesPanel(page);
  }
  return out;
}

async function templates(page, { module, names, open }) {
  const answers = {};
  const onResponse = (r) => {
    const path = decodeURIComponent(new URL(r.url()).pathname);
    if (path.startsWith(`/api/workflow_templates/${module}/`)) {
      answers[path.split("/").pop()] = { status: r.status(), type: r.headers()["content-type"] || "" };
    }
  };
  page.on("response", onResponse);
  const listed = await page.evaluate(async () => (await window.app.api.fetchApi("/workflow_templates")).json());
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const dialog = page.getByRole("dialog");
  await dialog.getByText(module, { exact: true }).first().click({ timeout: 20000 });
  await dialog.locator(`img[alt="${names[0]}"]`).first().waitFor({ timeout: 20000 });
  // The grid shows the cards in view only: page through it, noting each card's picture once it has loaded.
  await dialog.locator("img[alt]").first().evaluate((el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (p.scrollHeight > p.clientHeight + 1 && /auto|scroll/.test(getComputedStyle(p).overflowY)) {
        p.setAttribute("data-ace-scroller", "");
        return;
      }
    }
  });
  const scroller = dialog.locator("[data-ace-scroller]");
  const cards = [];
  const thumbnails = {};
  // A loaded machine can leave rows unrendered for a moment after a scroll (the grid renders the rows in view
  // only): the grid is paged through again from its top, in half-screen steps, while a card of ``names`` has not
  // been seen (three passes at most; a card the category lacks stays missing, and the test says so).
  for (let pass = 0; pass < 3 && (pass === 0 || names.some((n) => !cards.includes(n))); pass++) {
    if (pass && await scroller.count()) await scroller.evaluate((el) => { el.scrollTop = 0; });
    for (let atEnd = false; !atEnd;) {
      await page.waitForFunction(() => [...document.querySelectorAll("[role=dialog] img[alt]")].every((i) => i.complete),
        null, { timeout: 5000 }).catch(() => {});
      for (const img of await dialog.locator("img[alt]").evaluateAll((imgs) => imgs.map((i) => ({
        alt: i.alt, width: i.naturalWidth, height: i.naturalHeight })))) {
        if (!cards.includes(img.alt)) cards.push(img.alt);
        if (names.includes(img.alt) && !thumbnails[img.alt]?.width) thumbnails[img.alt] = { width: img.width, height: img.height };
      }
      atEnd = (await scroller.count()) === 0 || await scroller.evaluate((el, step) => {
        const end = el.scrollTop + el.clientHeight >= el.scrollHeight - 1;
        el.scrollTop += el.clientHeight * step;
        return end;
      }, pass ? 0.5 : 0.8);
      await page.waitForTimeout(300);
    }
  }
  if (await scroller.count()) await scroller.evaluate((el) => { el.scrollTop = 0; });
  // Open one template from its card, as a user does: the frontend fetches <name>.json and loads it.
  await dialog.locator(`img[alt="${open}"]`).first().click();
  await page.waitForFunction(() => !document.querySelector("[role=dialog] img[alt]"), null, { timeout: 20000 });
  const opened = { name: open, ...(await readMissingModels(page)) };
  opened.nodeCount = await page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes).length);
  await closeOtherWorkflows(page);
  await closeIssuesPanel(page);
  page.off("response", onResponse);
  for (const name of Object.keys(thumbnails)) thumbnails[name].answer = answers[`${name}.jpg`] || null;
  return { listed, cards, thumbnails, opened, jsonAnswer: answers[`${open}.json`] || null };
}

async function openNodeLibrary(page) {
  if (!(await page.locator(SEARCH).count())) {
    await page.evaluate(() => window.app.extensionManager.command.execute("Workspace.ToggleSidebarTab.node-library"));
  }
  await page.locator(SEARCH).first().waitFor({ timeout: 10000 });
  return page.locator(".comfy-vue-side-bar-header").first().locator("xpath=..");
}

// The node library's entries that contain ``search``, after searching for it, with every folder expanded, once
// the list holds still.
// ``want``: a pattern one name should match once the list is complete (e.g. CJK text after a switch of locale, which
// a loaded machine applies seconds later); the list is read until it matches, or for 5 s more once the library's own
// words match it (the frontend has applied the locale: one that drops the custom nodes' translations then gives
// their untranslated names), 30 s at most.
async function libraryNames(page, search, want = null) {
  const library = await openNodeLibrary(page);
  await page.locator(SEARCH).first().fill(search);
  let texts = [];
  let appliedAt = null;  // the poll at which the library's own text first matched ``want``
  const done = (same, polls) => same >= 4 && (!want || texts.some((t) => want.test(t)) ||
    (appliedAt !== null && polls - appliedAt >= 20));
  for (let same = 0, polls = 0; !done(same, polls) && polls < 120; polls++) {
    await page.waitForTimeout(250);
    const now = await library.evaluate((el, s) => {
      el.querySelectorAll("[role=treeitem][aria-expanded=false]").forEach((folder) => folder.click());
      return { all: el.innerText, names: [...new Set([...el.querySelectorAll("*")].filter((e) =>
        e.children.length === 0 && e.textContent.includes(s)).map((e) => e.textContent.trim()))].sort() };
    }, search);
    if (want && appliedAt === null && want.test(now.all.split("\n").filter((t) => !t.includes(search)).join("\n"))) {
      appliedAt = polls;
    }
    same = now.names.join("\n") === texts.join("\n") ? same + 1 : 0;
    texts = now.names;
  }
  return texts;
}

// ``names``: the display names the library may show for the node (English, translated), ``search``: what to type.
async function helpPage(page, { nodeId, names, search }) {
  const library = await openNodeLibrary(page);
  await page.locator(SEARCH).first().fill(search);
  const escaped = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const leaf = library.getByText(new RegExp(`^(${escaped.join("|")})$`)).first();
  await leaf.waitFor({ timeout: 10000 });
  await leaf.hover();
  const button = library.locator(".help-button").first();
  let via = "node library help button";
  let added = null;
  if (await button.count()) {
    await button.click();
  } else {  // this library has no help button: the properties panel's Info tab of a selected node
    via = "properties panel Info tab";
    await setSetting(page, "Comfy.RightSidePanel.IsOpen", false);  // reopened below: the tab fetches anew
    added = await page.evaluate((type) => {
      const node = window.LiteGraph.createNode(type);
      window.app.graph.add(node);
      window.app.canvas.selectNode(node);
      return node.id;
    }, nodeId);
    await setSetting(page, "Comfy.RightSidePanel.IsOpen", true);
    await page.locator("[data-testid=panel-tab-info]").first().click({ timeout: 10000 });
  }
  const help = page.locator(".node-help-content").first();
  await help.waitFor({ timeout: 10000 });
  await page.waitForFunction(() => document.querySelector(".node-help-content").innerText.length > 100, null,
    { timeout: 10000 }).catch(() => {});  // loaded (or fell back to the description)
  const text = await help.innerText();
  if (via.startsWith("node library")) {  // back to the library: the help page's first button
    await help.evaluate((el) => {
      let p = el.parentElement;
      while (p && !p.querySelector("button")) p = p.parentElement;
      if (p) p.querySelector("button").click();
    });
    await page.locator(SEARCH).first().waitFor({ timeout: 10000 });
  }
  if (added !== null) {
    await page.evaluate((id) => {
      window.app.canvas.deselectAll();
      window.app.graph.remove(window.app.graph.getNodeById(id));
    }, added);
  }
  return { via, text };
}

const TOUCHED_SETTINGS = ["Comfy.Workflow.ShowMissingModelsWarning", "Comfy.Locale", "Comfy.RightSidePanel.IsOpen"];

// Runs the parts ``config`` names; a part that throws reports {error} and the others still run; ms: time per part.
// Afterwards the page is as before for the workflow jobs (and their screenshots): settings, sidebar, panel.
export async function checkPackUi(page, config) {
  const before = await page.evaluate((ids) => Object.fromEntries(ids.map((id) =>
    [id, window.app.extensionManager.setting.get(id)])), TOUCHED_SETTINGS);
  const out = { ms: {} };
  const part = async (name, run) => {
    const started = Date.now();
    try {
      out[name] = await run();
    } catch (err) {
      out[name] = { error: String((err && err.stack) || err) };
      await page.keyboard.press("Escape");
    }
    out.ms[name] = Date.now() - started;
  };
  await setSetting(page, "Comfy.Workflow.ShowMissingModelsWarning", true);
  if (config.templates) await part("templates", () => templates(page, config.templates));
  if (config.missingModels) await part("missingModels", () => missingModels(page, config.missingModels));
  await setSetting(page, "Comfy.Workflow.ShowMissingModelsWarning", false);
  if (config.help) await part("help", () => helpPage(page, config.help));
  if (config.locale) {
    await setSetting(page, "Comfy.Locale", config.locale.locale);
    await part("localeNames", () => libraryNames(page, config.locale.search, /[\u4e00-\u9fff]/));
    if (config.help) await part("localeHelp", () => helpPage(page, config.help));
  }
  for (const [id, value] of Object.entries(before)) {
    if (value !== undefined && value !== null) await setSetting(page, id, value);
  }
  if (before["Comfy.Locale"] == null) await setSetting(page, "Comfy.Locale", "en");
  if (await page.locator(SEARCH).count()) {
    await page.locator(SEARCH).first().fill("");
    await page.evaluate(() => window.app.extensionManager.command.execute("Workspace.ToggleSidebarTab.node-library"));
  }
  await page.keyboard.press("Escape");
  await page.mouse.move(1000, 600);
  await closeOtherWorkflows(page);
  return out;
}
