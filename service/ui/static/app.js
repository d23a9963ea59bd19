"use strict";
// The page's behaviour, on the public HTTP API only (GET /v1/models, POST .../predict?explain=true,
// GET .../card). Plain JavaScript, no framework, no build step, nothing loaded from another host.
// The API key, when the service asks for one, lives in `state.apiKey` only: never in storage,
// cookies or the address bar, so reloading the page forgets it.

(function () {
  const state = {
    apiKey: null,
    models: [],
    model: null,
    // "name/version" of models that answered 422 explain_unavailable: later uploads skip explain.
    noExplain: new Set(),
    objectUrl: null,
    explanation: null,
    // What to run again after the user gave a key or pressed "Try again".
    pending: null,
  };

  const $ = (id) => document.getElementById(id);
  const PREVIEWABLE = new Set(["image/png", "image/jpeg"]);

  // ---------- HTTP ----------

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "same-origin" });
    } catch (error) {
      return { status: 0, ok: false, body: null, retryAfter: null, requestId: null };
    }
    const type = response.headers.get("Content-Type") || "";
    let body = null;
    try {
      body = type.includes("json") ? await response.json() : await response.text();
    } catch (error) {
      body = null;
    }
    return {
      status: response.status,
      ok: response.ok,
      body,
      retryAfter: response.headers.get("Retry-After"),
      requestId: response.headers.get("X-Request-ID") || (body && body.request_id) || null,
    };
  }

  function detailOf(response) {
    const body = response.body;
    if (body && typeof body === "object" && body.detail) return String(body.detail);
    return `the server answered HTTP ${response.status}`;
  }

  // ---------- messages ----------

  function setStatus(text) {
    $("status").textContent = text;
  }

  function clearError() {
    $("error").hidden = true;
    $("retry").hidden = true;
    $("error-text").textContent = "";
    $("error-request").textContent = "";
  }

  function showError(text, response, retry) {
    setStatus("");
    $("error-text").textContent = text;
    $("error-request").textContent = response && response.requestId ? `Request id: ${response.requestId}` : "";
    $("error").hidden = false;
    $("error").dataset.status = response ? String(response.status) : "";
    state.pending = retry || null;
    $("retry").hidden = !retry;
    if (retry) $("retry").focus();
  }

  // Handles the answers every call shares: auth, overload, unreachable. True when it handled `response`.
  function handleCommon(response, retry) {
    if (response.status === 401 || response.status === 403) {
      askForKey(response, retry);
      return true;
    }
    if (response.status === 503) {
      const wait = response.retryAfter ? ` Try again in ${response.retryAfter} s.` : " Try again in a moment.";
      showError(`The service is busy or still starting: ${detailOf(response)}.${wait}`, response, retry);
      return true;
    }
    if (response.status === 0) {
      showError("The service cannot be reached. Check the network connection, then try again.", response, retry);
      return true;
    }
    return false;
  }

  function askForKey(response, retry) {
    const reason = response.status === 403
      ? `This key is not allowed here: ${detailOf(response)}. Enter another key.`
      : state.apiKey
        ? `The service did not accept this key: ${detailOf(response)}. Enter the key again.`
        : "This service asks for an API key. Enter it to continue.";
    state.apiKey = null;
    state.pending = retry || null;
    setStatus("");
    $("key-reason").textContent = reason;
    if (!state.model) $("model-name").textContent = "waiting for the API key";
    $("key-form").hidden = false;
    $("api-key").focus();
  }

  // ---------- models ----------

  async function loadModels() {
    setStatus("Loading the model list…");
    let response = await api("/v1/models");
    if (response.status === 404) {
      // A service without the model listing: its default model's record from GET /model.
      response = await api("/model");
      if (response.ok && response.body) {
        const record = response.body;
        response.body = { models: [{ ...record, record, default: true, legacy: true }] };
      }
    }
    if (handleCommon(response, loadModels)) return;
    if (!response.ok || !response.body || !Array.isArray(response.body.models) || !response.body.models.length) {
      showError(`The model list could not be read: ${detailOf(response)}.`, response, loadModels);
      return;
    }
    clearError();
    setStatus("");
    state.models = response.body.models;
    const select = $("model-select");
    select.replaceChildren();
    state.models.forEach((model, index) => {
      const option = document.createElement("option");
      option.value = String(index);
      option.textContent = `${model.name} ${model.version}${model.default ? " (default)" : ""}`;
      select.appendChild(option);
    });
    const previous = state.model ? state.models.findIndex((m) => key(m) === key(state.model)) : -1;
    const chosen = previous >= 0 ? previous : Math.max(0, state.models.findIndex((m) => m.default));
    select.value = String(chosen);
    $("model-picker").hidden = state.models.length < 2;
    chooseModel(chosen);
  }

  function key(model) {
    return `${model.name}/${model.version}`;
  }

  function modelPath(model) {
    return `/v1/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(model.version)}`;
  }

  function chooseModel(index) {
    const model = state.models[index];
    const changed = !state.model || key(model) !== key(state.model);
    state.model = model;
    const record = model.record || {};
    const use = record.intended_use || {};
    $("model-name").textContent = model.name;
    const provider = model.provider && model.provider.replace(/ExecutionProvider$/, "");
    $("model-version").textContent = [model.version, model.variant, provider].filter(Boolean).join(" · ");
    $("model-labels").textContent = (model.labels || record.labels || []).join(", ") || "–";
    const scope = [
      use.modalities && `modalities ${use.modalities.join(", ")}`,
      use.body_parts && `body parts ${use.body_parts.join(", ")}`,
      use.view_positions && `views ${use.view_positions.join(", ")}`,
    ].filter(Boolean).join("; ");
    const description = use.description || "Not stated in the model record; read the model card.";
    $("model-use").textContent = scope ? `${description} (${scope})` : description;
    $("model-out-of-scope").textContent = (use.out_of_scope || []).join("; ") || "Not stated in the model record.";
    const caveats = model.caveats || [];
    $("model-caveats-list").replaceChildren(...caveats.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
    $("model-caveats").hidden = caveats.length === 0;
    const link = $("card-link");
    link.href = `${modelPath(model)}/card`;
    link.textContent = `Read the model card of ${model.name} ${model.version}`;
    link.hidden = false;
    if (changed) $("result-panel").hidden = true;
  }

  // ---------- prediction ----------

  function predictPath(model) {
    return model.legacy ? "/predict" : `${modelPath(model)}/predict`;
  }

  async function predict(file) {
    if (!state.model) {
      showError("No model is loaded yet. Wait for the model list, then try again.", null, () => loadModels());
      return;
    }
    const model = state.model;
    clearError();
    setStatus("Analysing the image…");
    $("result-panel").setAttribute("aria-busy", "true");
    const form = new FormData();
    form.append("file", file, "image"); // the file's own name never leaves the browser
    // The listing's `explain` says whether the model has heatmaps; else a 422 explain_unavailable tells us once.
    if (model.explain === false) state.noExplain.add(key(model));
    const withExplain = !state.noExplain.has(key(model));
    let response = await api(predictPath(model) + (withExplain ? "?explain=true" : ""), { method: "POST", body: form });
    if (withExplain && response.status === 422 && response.body && response.body.code === "explain_unavailable") {
      state.noExplain.add(key(model));
      response = await api(predictPath(model), { method: "POST", body: form });
    }
    $("result-panel").removeAttribute("aria-busy");
    const again = () => predict(file);
    if (handleCommon(response, again)) return;
    if (!response.ok) {
      showRejected(response, response.status, response.body);
      return;
    }
    const body = response.body || {};
    const item = Array.isArray(body.results) ? body.results[0] : body;
    if (!item || item.error) {
      showRejected(response, item ? item.status : response.status, item ? item.error : null);
      return;
    }
    setStatus("Result ready.");
    render(file, model, item);
  }

  function showRejected(response, status, error) {
    const detail = error && error.detail ? error.detail : detailOf(response);
    $("result-panel").hidden = true;
    showError(`The file was not accepted (HTTP ${status}): ${detail}`, response, null);
  }

  // ---------- rendering ----------

  const format = (value) => Number(value).toFixed(3);
  const percent = (value) => `${(Number(value) * 100).toFixed(1)} %`;

  function render(file, model, item) {
    const predictions = [...item.predictions].sort((a, b) => b.probability - a.probability);
    const multiclass = predictions.every((p) => p.threshold === null || p.threshold === undefined);
    $("summary").textContent = summary(predictions, multiclass, model.record);
    $("reading").textContent = multiclass ? "" : window.MedReading.readingNote(predictions, model.record);
    $("reading").hidden = multiclass;
    const tone = multiclass ? "neutral" : predictions.some((p) => p.positive) ? "positive" : "negative";
    $("summary").className = `summary ${tone}`;
    showOutOfDistribution(item);
    $("legend").textContent = multiclass
      ? "A multi-class model: its decision is the most probable class; it has no thresholds."
      : "marks the decision threshold: at or above it the model calls the finding positive.";
    $("legend-mark").hidden = multiclass;
    const list = $("predictions");
    list.replaceChildren(...predictions.map((p) => row(p, multiclass)));
    showImage(file, item.explanation || null);
    showHeatmaps(model, item.explanation || null, predictions);
    $("image-caption").textContent = item.explanation
      ? `The image as the service decoded it (${item.explanation.width} × ${item.explanation.height} pixels shown).`
      : "The uploaded image.";
    $("result-panel").hidden = false;
    $("result-heading").focus();
  }

  // The result's own out-of-distribution fields: a flagged image gets the API's warning above the decision.
  function showOutOfDistribution(item) {
    const checked = typeof item.ood_score === "number";
    const flagged = checked && item.out_of_distribution === true;
    $("ood-warning").hidden = !flagged;
    $("ood-warning-text").textContent = flagged
      ? item.warning || "This image looks unlike the images the model was trained on; its result is not reliable."
      : "";
    $("ood-note").textContent = !checked
      ? "No out-of-distribution check for this model."
      : flagged
        ? `Out-of-distribution score ${format(item.ood_score)}: above the model's threshold.`
        : `Out-of-distribution check passed (score ${format(item.ood_score)}): the image resembles the training images.`;
    $("result-panel").classList.toggle("unreliable", flagged);
  }

  function summary(predictions, multiclass, record) {
    if (multiclass) {
      const top = predictions[0];
      return `Most likely: ${top.label} (probability ${format(top.probability)}, the highest of ${predictions.length}).`;
    }
    const positive = predictions.filter((p) => p.positive);
    if (predictions.length === 1) {
      return window.MedReading.decisionSentence(predictions[0], record);
    }
    return positive.length
      ? `POSITIVE for ${positive.map((p) => p.label).join(", ")} (at or above their thresholds).`
      : `NEGATIVE: no finding reached its threshold (${predictions.length} checked).`;
  }

  function row(p, multiclass) {
    const item = document.createElement("li");
    // Multi-class: the top class may well be "normal", so it is not painted as a positive finding.
    const kind = multiclass ? (p.positive ? "top" : "other") : p.positive ? "positive" : "negative";
    item.className = `prediction ${kind}`;
    item.dataset.label = p.label;
    item.dataset.probability = String(p.probability);
    item.dataset.threshold = p.threshold === null || p.threshold === undefined ? "" : String(p.threshold);
    item.dataset.positive = String(p.positive);

    const head = document.createElement("div");
    head.className = "prediction-head";
    const label = document.createElement("span");
    label.className = "prediction-label";
    label.textContent = p.label;
    const decision = document.createElement("span");
    decision.className = "prediction-decision";
    decision.textContent = multiclass
      ? (p.positive ? "most likely" : "less likely")
      : (p.positive ? "positive: at or above threshold" : "negative: below threshold");
    head.append(label, " ", decision);

    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${Math.min(100, Math.max(0, p.probability * 100))}%`;
    bar.appendChild(fill);
    if (!multiclass) {
      bar.classList.add("with-threshold");
      const at = Math.min(100, Math.max(0, p.threshold * 100));
      const mark = document.createElement("div");
      mark.className = "bar-threshold";
      mark.style.left = `${at}%`;
      bar.appendChild(mark);
      // The marker's own label, anchored on the side with room for it.
      const tag = document.createElement("span");
      tag.className = "bar-threshold-label";
      tag.textContent = `threshold ${format(p.threshold)}`;
      if (at <= 50) tag.style.left = `${at}%`;
      else tag.style.right = `${100 - at}%`;
      tag.classList.add(at <= 50 ? "from-left" : "from-right");
      bar.appendChild(tag);
    }

    const numbers = document.createElement("p");
    numbers.className = "prediction-numbers";
    const probability = document.createElement("span");
    probability.className = "probability";
    probability.textContent = format(p.probability);
    numbers.append("probability ", probability, ` (${percent(p.probability)})`);
    if (!multiclass) {
      const threshold = document.createElement("span");
      threshold.className = "threshold";
      threshold.textContent = format(p.threshold);
      numbers.append(" · threshold ", threshold);
    }
    item.append(head, bar, numbers);
    return item;
  }

  function showImage(file, explanation) {
    const image = $("image");
    if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
    state.objectUrl = null;
    $("no-preview").hidden = true;
    image.hidden = false;
    if (explanation && explanation.image_png) {
      image.src = `data:image/png;base64,${explanation.image_png}`;
      image.alt = "The uploaded image, as the service decoded it";
    } else if (PREVIEWABLE.has(file.type) || !file.type) {
      // PNG and JPEG are shown from the local file; anything else the browser cannot draw.
      state.objectUrl = URL.createObjectURL(file);
      image.src = state.objectUrl;
      image.alt = "The uploaded image";
    } else {
      image.removeAttribute("src");
      image.hidden = true;
      $("no-preview").hidden = false;
    }
  }

  function showHeatmaps(model, explanation, predictions) {
    const heatmaps = explanation && Array.isArray(explanation.heatmaps) ? explanation.heatmaps : [];
    state.explanation = heatmaps.length ? explanation : null;
    const overlay = $("heatmap");
    $("heatmap-controls").hidden = !heatmaps.length;
    const note = $("heatmap-note");
    note.hidden = heatmaps.length > 0;
    note.textContent = state.noExplain.has(key(model))
      ? "This model has no heatmap output, so no heatmap can be shown."
      : "The service sent no heatmap for this image.";
    if (!heatmaps.length) {
      $("heatmap-caption").textContent = "";
      overlay.hidden = true;
      overlay.removeAttribute("src");
      return;
    }
    const select = $("heatmap-label");
    select.replaceChildren(...heatmaps.map((h) => new Option(h.label, h.label)));
    const labels = new Set(heatmaps.map((h) => h.label));
    const first = predictions.find((p) => labels.has(p.label)); // highest probability with a map
    select.value = first ? first.label : heatmaps[0].label;
    $("heatmap-label-field").hidden = heatmaps.length < 2;
    updateHeatmap();
  }

  function updateHeatmap() {
    const overlay = $("heatmap");
    const explanation = state.explanation;
    if (!explanation) return;
    const label = $("heatmap-label").value;
    const heatmap = explanation.heatmaps.find((h) => h.label === label) || explanation.heatmaps[0];
    overlay.src = `data:image/png;base64,${heatmap.png}`;
    overlay.alt = `Heatmap for ${heatmap.label}: where the model's evidence for it lies`;
    overlay.dataset.label = heatmap.label;
    const opacity = Number($("heatmap-opacity").value);
    overlay.style.opacity = String(opacity / 100);
    $("heatmap-opacity-value").textContent = `${opacity} %`;
    $("heatmap-opacity").setAttribute("aria-valuetext", `${opacity} %`);
    overlay.hidden = !$("heatmap-toggle").checked;
    $("heatmap-caption").textContent = overlay.hidden
      ? ""
      : `Heatmap shown for ${heatmap.label} at ${opacity} % opacity.`;
  }

  // ---------- the model card ----------

  async function openCard(event) {
    event.preventDefault();
    const model = state.model;
    const body = $("card-body");
    const response = await api(`${modelPath(model)}/card`, { headers: { Accept: "text/markdown" } });
    if (handleCommon(response, () => openCard(event))) return;
    body.replaceChildren();
        if (response.ok && typeof response.body === "string") {
      body.appendChild(window.renderMarkdown(response.body));
    } else {
      const message = document.createElement("p");
      message.textContent = response.status === 404
        ? `No model card is available for this model: ${detailOf(response)}.`
        : `The model card could not be read: ${detailOf(response)}.`;
      body.appendChild(message);
    }
    $("card-dialog").showModal();
    $("card-close").focus();
  }

  // ---------- wiring ----------

  function takeFiles(files) {
    if (!files || !files.length) return;
    if (files.length > 1) setStatus("Only the first file is analysed.");
    predict(files[0]);
  }

  function wire() {
    const input = $("file-input");
    $("choose-file").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      takeFiles(input.files);
      input.value = ""; // choosing the same file again still triggers a new analysis
    });
    const zone = $("drop-zone");
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      zone.addEventListener(name, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      takeFiles(event.dataTransfer && event.dataTransfer.files);
    });
    // A file dropped beside the zone must not make the browser navigate away from the page.
    for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());

    $("model-select").addEventListener("change", (event) => chooseModel(Number(event.target.value)));
    $("heatmap-toggle").addEventListener("change", updateHeatmap);
    $("heatmap-opacity").addEventListener("input", updateHeatmap);
    $("heatmap-label").addEventListener("change", updateHeatmap);
    $("retry").addEventListener("click", () => {
      const retry = state.pending;
      clearError();
      if (retry) retry();
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.apiKey = $("api-key").value.trim() || null;
      $("api-key").value = "";
      $("key-form").hidden = true;
      const retry = state.pending;
      state.pending = null;
      // With a new key the model list may differ: reload it first, then redo what was asked.
      loadModels().then(() => {
        if (retry && retry !== loadModels && state.model && $("key-form").hidden) retry();
      });
    });
    $("card-link").addEventListener("click", openCard);
    $("card-close").addEventListener("click", () => $("card-dialog").close());
    $("result-heading").tabIndex = -1;
  }

  wire();
  loadModels();
})();
