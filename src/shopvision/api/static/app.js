// The page's behaviour: send a photo or a product id to the API, show classes and look-alikes.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { lastQuery: null };

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function filters() {
  const label = $("label-filter").value.trim();
  const category = $("category-filter").value.trim();
  return (label ? `&label=${encodeURIComponent(label)}` : "") +
         (category ? `&category=${encodeURIComponent(category)}` : "");
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

async function call(url, options = {}) {
  $("error").hidden = true;
  $("progress").hidden = false;
  try {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.detail ? `${body.title}: ${body.detail}` : `The service answered ${response.status}`);
    }
    return body;
  } finally {
    $("progress").hidden = true;
  }
}

// Which network answered, as the server states it: every similarity is only comparable within one backbone.
function showModel(provenance) {
  const sha = provenance.model_sha256 ? ` · model sha256 ${provenance.model_sha256.slice(0, 12)}…` : "";
  $("model-line").textContent = `Model: ${provenance.backbone}${provenance.synthetic ? " (SYNTHETIC weights)" : ""}` +
    ` · ${provenance.embedding_dim}-d embeddings${sha}`;
}

function showBanner(provenance) {
  if (provenance) showModel(provenance);
  if (provenance && provenance.synthetic && !$("synthetic-banner")) {
    $("banners").append(element("p", {
      id: "synthetic-banner", class: "banner",
      text: "Synthetic weights: this server runs ResNet50 with seeded random weights (source: " +
            `${provenance.source}). Classes and similarities are meaningless; for testing only.`,
    }));
  }
}

function scoreItem(item, ...extra) {
  const percent = (item.score * 100).toFixed(1);
  const bar = element("div", { class: "bar", role: "img", "aria-label": `${percent} percent` },
                      element("span", { style: `width: ${Math.max(1, item.score * 100)}%` }));
  return element("li", {}, element("span", { text: `${item.label} · ${percent}%` }), ...extra, bar);
}

function showClasses(classes) {
  $("classes").replaceChildren(...classes.map((item) => scoreItem(item)));
}

// The shop's own categories (a trained head serves): each offers to search within it.
function showCategories(categories) {
  $("shop-categories").hidden = categories.length === 0;
  $("categories").replaceChildren(...categories.map((item) => {
    const only = element("button", { type: "button", class: "link", text: "only this category",
                                     "aria-label": `Only products in ${item.label}` });
    only.addEventListener("click", () => { $("category-filter").value = item.label; rerun(); });
    return scoreItem(item, " ", only);
  }));
  $("known-categories").replaceChildren(...categories.map((item) => element("option", { value: item.label })));
}

function sized(url, size) {
  return `${url}${url.includes("?") ? "&" : "?"}size=${size}`;
}

function showResults(results, note) {
  const grid = $("grid");
  grid.replaceChildren();
  $("results-note").textContent = results.length ? note : "No products match.";
  for (const hit of results) {
    const details = Object.entries(hit.extra).filter(([key]) => key !== "category")
      .map(([key, value]) => `${key}: ${value}`).join(" · ");
    const button = element("button", { type: "button", text: "More like this",
                                       "aria-label": `More like ${hit.product_id}` });
    button.addEventListener("click", () => searchSimilar(hit.product_id));
    // The photo that matched is the large one; a product's others follow as small thumbnails.
    const photos = hit.photo_urls.length > 1 ? element("div", { class: "photos" },
      ...hit.photo_urls.map((url, index) => element("img", {
        src: sized(url, 128), loading: "lazy", class: index === hit.photo ? "matched" : "",
        alt: `Photo ${index + 1} of ${hit.product_id}${index === hit.photo ? " (matched)" : ""}` }))) : "";
    grid.append(element("li", { "data-product-id": hit.product_id, "data-matched-photo": String(hit.photo) },
      element("img", { src: sized(hit.image_url, 256), alt: `Photo of ${hit.product_id}`, loading: "lazy" }),
      photos,
      element("div", { class: "meta" },
        element("strong", { text: hit.product_id }),
        element("span", { text: `similarity ${hit.score.toFixed(3)} · ${hit.label}` +
                                 (hit.category ? ` · category ${hit.category}` : "") +
                                 (hit.photo_urls.length > 1 ?
                                   ` · photo ${hit.photo + 1} of ${hit.photo_urls.length} matched` : "") }),
        details ? element("div", { text: details }) : ""),
      button));
  }
}

async function searchPhoto(file) {
  if (!file) return;
  state.lastQuery = { file };
  $("preview-image").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("classes").replaceChildren();
  showCategories([]);
  const form = new FormData();
  form.append("image", file);
  try {
    const body = await call(`/v1/search?k=12${filters()}`, { method: "POST", body: form });
    showBanner(body.provenance);
    showClasses(body.query);
    showCategories(body.categories);
    showResults(body.results, "Most similar first.");
  } catch (error) {
    $("preview").hidden = true;
    showResults([], "");
    showError(error.message);
  }
}

async function searchSimilar(productId) {
  state.lastQuery = { productId };
  try {
    const body = await call(`/v1/products/${encodeURIComponent(productId)}/similar?k=12${filters()}`);
    showBanner(body.provenance);
    $("preview-image").src = `/v1/products/${encodeURIComponent(productId)}/image?size=512`;
    $("preview").hidden = false;
    $("classes").replaceChildren(element("li", { text: `Catalog product ${productId}` }));
    showCategories([]);
    showResults(body.results, `More like ${productId}, most similar first.`);
  } catch (error) {
    showError(error.message);
  }
}

function rerun() {
  if (state.lastQuery?.file) searchPhoto(state.lastQuery.file);
  else if (state.lastQuery?.productId) searchSimilar(state.lastQuery.productId);
}

async function loadCatalog() {
  try {
    const response = await fetch("/v1/catalog");
    if (!response.ok) return;
    const catalog = await response.json();
    if (catalog.demo) $("banners").append(element("p", { class: "banner", text: catalog.demo }));
    $("known-labels").replaceChildren(...Object.keys(catalog.labels).map((label) => element("option", { value: label })));
  } catch (error) {
    showError(`Cannot reach the service: ${error.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (event) => searchPhoto(event.target.files[0]));
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file-input").click(); }
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    searchPhoto(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((entry) => entry.type.startsWith("image/"));
    if (item) searchPhoto(item.getAsFile());
  });
  $("product-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const productId = $("product-input").value.trim();
    if (productId) searchSimilar(productId);
  });
  $("filter-form").addEventListener("submit", (event) => { event.preventDefault(); rerun(); });
  loadCatalog();
});
