// kvx report DB: tables (md/csv/latex/json) and SVG plots from stored results.
#include <cstdio>

#include "apps/kvx/command.h"
#include "core/report/report.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", "Tables and plots from a results database (filter, pivot, baseline)");
  auto db = std::make_shared<std::string>();
  auto sweep = std::make_shared<std::string>();
  auto opt = std::make_shared<kvx::report::ReportOptions>();
  cmd->add_option("db", *db, "results database")->required();
  cmd->add_option("--sweep", *sweep, "only results of this sweep");
  cmd->add_option("--filter", opt->filters, "FIELD OP VALUE (OP: = != >= <= > < ~), repeatable, all must hold");
  cmd->add_option("--rows", opt->rows, "row fields, comma-separated (default: method)")->delimiter(',');
  cmd->add_option("--cols", opt->cols, "pivot: one column per value of this field");
  cmd->add_option("--metric", opt->metrics, "metric(s) to show (default: all; a pivot needs one)")->delimiter(',');
  cmd->add_option("--baseline", opt->baseline, "FIELD=VALUE: add delta and delta% vs that row, e.g. method=fp16");
  cmd->add_option("--format", opt->format, "md, csv, latex or json")->check(CLI::IsMember({"md", "csv", "latex", "json"}));
  cmd->add_option("--plot", opt->plot, "also write an SVG line chart of the metric vs --x (default: --cols)");
  cmd->add_option("--x", opt->x, "x field of the plot (numeric)");
  cmd->add_option("--plot-kind", opt->plot_kind, "line, or heatmap (y = first --rows field, x = --cols)")
      ->check(CLI::IsMember({"line", "heatmap"}));
  cmd->add_option("--pareto", opt->pareto,
                  "X,Y: only the Pareto envelope of two metrics per --rows group, e.g. bpv,ppl or "
                  "compression_ratio:max,accuracy:max");
  cmd->add_option("--precision", opt->precision, "decimals of metric values (default 4)")->check(CLI::Range(0, 12));
  cmd->callback([db, sweep, opt] {
    if (!sweep->empty()) opt->sweep = *sweep;
    auto out = kvx::report::run_report(*db, *opt);
    std::fwrite(out.text.data(), 1, out.text.size(), stdout);
    if (out.results == 0) std::fprintf(stderr, "kvx report: no results match\n");
  });
}

KVX_COMMAND(40, setup);

}  // namespace
