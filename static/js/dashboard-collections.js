// Collections page: scheduled against collected cash, the collection rate and the cash split by
// month, from the #collections-data json_script block. The month table holds every number too.
(function () {
  "use strict";
  var source = document.getElementById("collections-data");
  if (!source || !window.abacoCharts) return;
  var data = JSON.parse(source.textContent);
  var charts = window.abacoCharts;
  var green = "#0b6e4f", grey = "#adb5bd", amber = "#b7791f", red = "#c53030", blue = "#1864ab";

  function series(label, values, color) {
    return { label: label, data: values, backgroundColor: color, borderColor: color, pointRadius: 2 };
  }

  charts.draw("chart-scheduled-collected", "bar", data.labels,
    [series("Scheduled", data.scheduled, grey), series("Collected", data.collected, green)], charts.money);
  charts.draw("chart-collection-rate", "line", data.labels,
    [series("Collection rate", data.rate, green)], charts.percent);
  charts.draw("chart-collection-split", "bar", data.labels, [
    series(data.names.collections_overdue, data.split.collections_overdue, red),
    series(data.names.collections_current, data.split.collections_current, blue),
    series(data.names.collections_advance, data.split.collections_advance, amber)
  ], charts.money, true);
})();
