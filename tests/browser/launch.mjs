// TEST ONLY: the headless Debian chromium both browser scripts drive (never a downloaded browser), in a fresh profile
// under OUT_DIR. The executable: CHROMIUM (tests/test_browser.py sets it: chromium-headless-shell where installed),
// else /usr/bin/chromium.
//
// No GPU: pages are rastered and composited in software. --disable-gpu-compositing composites in the browser
// process instead of through SwiftShader's GL in the GPU process (with the sidebar tabs of test_browser.py's
// FRONTEND_SETTINGS, the pinned pass took 99 instead of 112 CPU-seconds on 2 cores; its screenshots look the same).
// No WebGL either: the 3D preview widgets then stay empty instead of rendering in software (slow, not compared).
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

export async function launch(outDir, viewport, options = {}) {
  const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(outDir, "profile-")), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport,
    ...options,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-gpu-compositing", "--disable-3d-apis",
      "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
      "--disable-quic", "--mute-audio"],
  });
  return { context, page: context.pages()[0] || (await context.newPage()) };
}
