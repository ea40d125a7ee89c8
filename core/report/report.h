// `kvx report`: result rows -> filtered, pivoted, formatted tables and SVG plots.
// Fields: model, dataset, protocol, method (the config's method entry name), label (the
// method's short label), every parameter path (protocol.seq_len, key.bits, ...) and every
// numeric metric (flattened with dots). Rows are sorted (null < numbers < strings); fields that
// vary among the selected results and are not determined by the requested row fields are
// appended to the rows, so no two results collapse into one row. Filters are evaluated in
// C++ on loaded rows: no user text ever reaches SQL.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/store/store.h"

namespace kvx::report {

struct ReportOptions {
  std::optional<std::string> sweep;
  std::vector<std::string> filters;  // FIELD OP VALUE, OP in = != >= <= > < ~ (substring)
  std::vector<std::string> rows;     // default: method
  std::string cols;                  // pivot column field ("" = long table)
  std::vector<std::string> metrics;  // default: every metric (long), the only metric (pivot)
  std::string baseline;              // FIELD=VALUE: adds Δ and Δ% vs the matching baseline row
  std::string format = "md";         // md | csv | latex | json
  std::string plot;                  // SVG file to write ("" = none)
  std::string plot_kind = "line";    // line | heatmap (x = cols or x, y = first row field)
  std::string x;                     // plot x field (default: cols)
  // "X,Y": keep only the Pareto envelope of metrics X and Y within each value of the first row
  // field (default method); each may end in :min or :max (default: max for accuracy, rouge,
  // agreement, compression_ratio, retained and tokens/s metrics, min otherwise). The plot shows
  // every point and the envelope.
  std::string pareto;
  int precision = 4;                 // decimals of metric values
};

struct ReportOutput {
  std::string text;  // the rendered table
  std::string svg;   // "" unless a plot was asked for
  size_t results = 0;  // result rows after filtering
};

ReportOutput build_report(const std::vector<ResultRow>& rows, const ReportOptions& opt);
// Opens the database read-only, builds the report, writes the plot; returns what to print.
ReportOutput run_report(const std::string& db, const ReportOptions& opt);

}  // namespace kvx::report
