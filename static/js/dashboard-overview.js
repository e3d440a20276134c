// Overview page: draws the month-end trend charts from the #trend-data json_script block.
// The numbers are already on the page (tiles and the trend table); charts are an extra.
(function () {
  "use strict";
  var source = document.getElementById("trend-data");
  if (!source || !window.abacoCharts) return;
  var trend = JSON.parse(source.textContent);
  var charts = window.abacoCharts;
  var green = "#0b6e4f", amber = "#b7791f", red = "#c53030";

  function series(code, color) {
    return { label: trend.names[code], data: trend.series[code], borderColor: color, backgroundColor: color, pointRadius: 2 };
  }

  charts.draw("chart-outstanding", "line", trend.labels, [series("outstanding_principal", green)], charts.money);
  charts.draw("chart-disbursements", "bar", trend.labels, [series("disbursements", green)], charts.money);
  charts.draw("chart-par", "line", trend.labels, [series("par_30", amber), series("par_90", red)], charts.percent);
  charts.draw("chart-collection", "line", trend.labels, [series("collection_rate", green)], charts.percent);
})();
