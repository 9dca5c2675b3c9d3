// Drives the node's rating page (/rate) in Debian's headless Chromium with
// playwright-core: optionally enters an API key, rates three images by
// clicking (the second with an artifacts level picked first), a fourth with
// the keyboard shortcuts, and saves a screenshot.
//   node rate.mjs BASE_URL APIKEY|- OUT_DIR
// Prints one JSON line: {"rated": [{id, rating, artifacts}], "earned": "...",
// "count": "..."}.
import { chromium } from "playwright-core";
import path from "node:path";

const [base, apikey, outDir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  page.setDefaultTimeout(15000);
  await page.goto(base + "/rate");
  if (apikey && apikey !== "-") {
    await page.fill("#apikey", apikey);
    await page.click("#save-key");
  }
  const currentId = async () => {
    await page.waitForFunction(() => {
      const img = document.getElementById("image");
      return img.dataset.id && img.complete && img.naturalWidth > 0 &&
             !document.querySelector("button.rate").disabled;
    });
    return page.$eval("#image", (img) => img.dataset.id);
  };
  const rated = [];
  const plan = [
    { rating: 8, artifacts: null, keys: false },
    { rating: 3, artifacts: 2, keys: false },
    { rating: 10, artifacts: null, keys: false },
    { rating: 6, artifacts: 1, keys: true },   // "b" then "6"
  ];
  for (const [i, step] of plan.entries()) {
    const id = await currentId();
    if (step.keys) {
      await page.keyboard.press(String.fromCharCode(97 + step.artifacts));
      await page.keyboard.press(String(step.rating % 10));
    } else {
      if (step.artifacts !== null) await page.click(`button.artifacts[data-artifacts="${step.artifacts}"]`);
      await page.click(`button.rate[data-rating="${step.rating}"]`);
    }
    await page.waitForFunction((n) => document.getElementById("rated-count").textContent === String(n), i + 1);
    rated.push({ id, rating: step.rating, artifacts: step.artifacts });
  }
  await page.waitForFunction((last) => document.getElementById("image").dataset.id !== last ||
                             document.getElementById("message").textContent.includes("no images"),
                             rated[rated.length - 1].id);
  await page.screenshot({ path: path.join(outDir, "rate-page.png"), fullPage: true });
  const earned = await page.textContent("#kudos-earned");
  const count = await page.textContent("#rated-count");
  console.log(JSON.stringify({ rated, earned, count }));
} finally {
  await browser.close();
}
