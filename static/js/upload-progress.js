// Follows an upload's load in the task cluster: polls its progress and reloads once when done.
(function () {
  const box = document.getElementById("upload-status");
  if (!box || box.dataset.done) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status-label");
  const label = document.getElementById("upload-progress-label");
  async function poll() {
    const response = await fetch(box.dataset.progressUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) return setTimeout(poll, 5000);
    const state = await response.json();
    bar.value = state.progress;
    status.textContent = state.status_label;
    label.textContent = state.label;
    if (state.done) window.location.reload();
    else setTimeout(poll, 1000);
  }
  setTimeout(poll, 500);
})();
