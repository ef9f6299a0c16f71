// Live job progress: polls the page's own JSON endpoint (same-origin, session cookie) until the job
// ends. The bar shows the phase-weighted fraction (full only once the job succeeded); a failed job
// says it can be resumed and the page reloads to show its Resume/Cancel buttons.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) { return; }
  var url = root.getAttribute("data-progress-url");
  var bar = document.getElementById("job-progress");
  var state = document.getElementById("job-state");
  var phase = document.getElementById("job-phase");
  var count = document.getElementById("job-count");
  var rate = document.getElementById("job-rate");
  var error = document.getElementById("job-error");
  var resumable = document.getElementById("job-resumable");
  var done = document.getElementById("job-done");
  var initial = state.textContent;
  var ended = ["succeeded", "cancelled"];

  function show(job) {
    state.textContent = job.state;
    state.className = "badge job-" + job.state;
    bar.max = 1000;
    bar.value = Math.round((job.fraction || 0) * 1000);
    bar.textContent = Math.round((job.fraction || 0) * 100) + "%";
    if (phase && job.phase_count) {
      phase.textContent = "Phase " + job.phase_number + " of " + job.phase_count + (job.phase ? ": " + job.phase : "");
    }
    count.textContent = job.done + " of " + (job.total || 0) + " items planned so far";
    if (rate) {
      rate.hidden = !job.rate;
      if (job.rate) {
        rate.textContent = Math.round(job.rate).toLocaleString() + " " + job.rate_unit + "/s" +
          (job.eta_seconds !== null ? ", about " + Math.round(job.eta_seconds) + " s left in this phase" : "");
      }
    }
    error.hidden = !job.error;
    if (job.error) { error.textContent = job.error.code + ": " + job.error.message; }
    if (resumable) { resumable.hidden = !job.resumable; }
    if (job.state !== initial && (job.state === "failed" || ended.indexOf(job.state) >= 0)) {
      // The actions allowed now differ (Resume appears, Cancel may go): show the page as it is.
      if (document.getElementById("job-actions") || job.resumable) { window.location.reload(); return true; }
    }
    if (ended.indexOf(job.state) >= 0) { done.hidden = false; return true; }
    return job.state === "failed";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (job && show(job)) { return; }
        window.setTimeout(poll, 500);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  poll();
})();
