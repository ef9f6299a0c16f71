// Live job progress: polls the page's own JSON endpoint (same-origin, session cookie) until the job ends.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) { return; }
  var url = root.getAttribute("data-progress-url");
  var bar = document.getElementById("job-progress");
  var state = document.getElementById("job-state");
  var count = document.getElementById("job-count");
  var rate = document.getElementById("job-rate");
  var error = document.getElementById("job-error");
  var done = document.getElementById("job-done");
  var finished = ["succeeded", "failed", "cancelled"];

  function show(job) {
    state.textContent = job.state;
    state.className = "badge job-" + job.state;
    var total = job.total || 0;
    bar.max = total > 0 ? total : 1;
    bar.value = total > 0 ? job.done : (job.state === "succeeded" ? 1 : 0);
    count.textContent = job.done + " of " + total + " items";
    if (rate) {
      rate.hidden = !job.rate;
      if (job.rate) {
        rate.textContent = Math.round(job.rate).toLocaleString() + " " + job.rate_unit + "/s" +
          (job.eta_seconds !== null ? ", about " + Math.round(job.eta_seconds) + " s left" : "");
      }
    }
    if (job.error) { error.hidden = false; error.textContent = job.error.code + ": " + job.error.message; }
    if (finished.indexOf(job.state) >= 0) { done.hidden = false; return true; }
    return false;
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
