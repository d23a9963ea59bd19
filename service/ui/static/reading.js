"use strict";
// How the page words a result: what the probability means, where the threshold sits and why, and whether the
// probability is calibrated, from the model's record (GET /v1/models). No DOM here, so a test runs it in Node.
// A decision never rests on a number the page leaves looking improbable: a POSITIVE call below 0.5 says why.

(function (root) {
  // What each threshold policy of the trainer (trainer/thresholds.py) chose, in a clinician's words.
  const POLICIES = {
    balanced: "chosen on the validation split where sensitivity equals specificity",
    youden: "chosen on the validation split where sensitivity + specificity is highest",
    fbeta: "chosen on the validation split to weigh missed cases above false alarms (F-beta)",
    f1: "chosen on the validation split where the F1 score is highest",
    sensitivity: "chosen on the validation split to reach the target sensitivity",
    fixed: "fixed in the training configuration",
  };

  const format = (value) => Number(value).toFixed(3);

  function policyOf(record) {
    const config = (record && record.provenance && record.provenance.config) || {};
    return (config.threshold && config.threshold.policy) || null;
  }

  // "calibrated" (temperature fitted on validation), "not calibrated", or null when the record does not say.
  function calibrationOf(record) {
    const provenance = (record && record.provenance) || {};
    const measured = provenance.metrics && provenance.metrics.calibration;
    if (measured && measured.temperature !== null && measured.temperature !== undefined) return "calibrated";
    const report = provenance.config && provenance.config.report;
    if (report && report.temperature_scaling === true) return "calibrated";
    // A training config without temperature scaling (or from before the option existed): not calibrated.
    if (measured || (provenance.config && Object.keys(provenance.config).length)) return "not calibrated";
    return null;
  }

  function thresholdWords(record) {
    const policy = policyOf(record);
    return POLICIES[policy] || "chosen on the validation split";
  }

  // One label's decision: "POSITIVE for pneumonia: the probability 0.261 is at or above this model's decision
  // threshold 0.082, which was chosen on the validation split where sensitivity equals specificity."
  function decisionSentence(p, record) {
    const why = `this model's decision threshold ${format(p.threshold)}, which was ${thresholdWords(record)}`;
    return p.positive
      ? `POSITIVE for ${p.label}: the probability ${format(p.probability)} is at or above ${why}.`
      : `NEGATIVE for ${p.label}: the probability ${format(p.probability)} is below ${why}.`;
  }

  // What the numbers mean, for the result's binary or multi-label predictions.
  function readingNote(predictions, record) {
    const parts = [];
    const lowPositive = predictions.filter((p) => p.positive && p.probability < 0.5);
    if (lowPositive.length) {
      const p = lowPositive[0];
      parts.push(
        `A POSITIVE call with a probability below 0.5 is expected here: the threshold for ${p.label} sits at ` +
          `${format(p.threshold)}, so the decision comes from the threshold, not from 0.5.`,
      );
    } else {
      parts.push("The decision comes from the threshold, not from 0.5.");
    }
    const calibration = calibrationOf(record);
    if (calibration === "calibrated") {
      parts.push(
        "The probability is calibrated on the validation split (temperature scaling): among validation images " +
          "scored alike, about that share had the finding. On patients unlike the training data it need not be.",
      );
    } else if (calibration === "not calibrated") {
      parts.push(
        "The probability is not calibrated: read it as a score that orders images by how strongly the model sees " +
          "the finding, not as the chance that this patient has it.",
      );
    } else {
      parts.push("The model's record does not say whether the probability is calibrated: read it as a score.");
    }
    return parts.join(" ");
  }

  const api = { decisionSentence, readingNote, calibrationOf, policyOf };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.MedReading = api;
})(typeof window !== "undefined" ? window : globalThis);
