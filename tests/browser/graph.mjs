// TEST ONLY: what the browser scripts read from and do to the frontend's current graph (shared by
// check_workflows.mjs, pack_ui.mjs and run_templates.mjs).

// Every load opens a workflow tab: the earlier ones are closed, or each load gets slower than the last.
export async function closeOtherWorkflows(page) {
  await page.evaluate(async () => {
    const store = window.app.extensionManager && window.app.extensionManager.workflow;
    if (!store || !store.openWorkflows || !store.closeWorkflow) return;
    for (const w of [...store.openWorkflows]) if (w !== store.activeWorkflow) await store.closeWorkflow(w);
  });
}

// The graph's image nodes once their pictures have loaded (15 s at most; they fetch them from /api/view after the
// graph is loaded, a missing one is a 404): [{value: the image widget's file, width: the picture's, 0 if none}].
export async function readImageNodes(page) {
  await page.waitForFunction(() => (window.app.graph._nodes || window.app.graph.nodes)
    .filter((n) => n.type === "LoadImage" || n.type === "LoadImageMask")
    .every((n) => n.imgs && n.imgs.length && n.imgs[0].complete), null, { timeout: 15000 }).catch(() => {});
  return page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes)
    .filter((n) => n.type === "LoadImage" || n.type === "LoadImageMask")
    .map((n) => ({ value: n.widgets.find((w) => w.name === "image").value,
      width: n.imgs && n.imgs[0] ? n.imgs[0].naturalWidth : 0 })));
}
