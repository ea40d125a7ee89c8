// One worker process: claims jobs of a sweep from the store until none is left, runs each with
// kvx::run_job (models kept loaded across jobs by a ModelCache), and records the outcome:
// metrics + provenance in the transaction that marks the job done, or the error (a job whose
// metrics hold NaN/Inf is a failure). While a job runs, a thread refreshes its heartbeat; if
// the lease was lost (another process reclaimed the job) the job is cancelled and its result
// dropped. SIGINT/SIGTERM cancel the current job, give it back as pending, and exit 130.
#pragma once
#include <string>

namespace kvx::runner {

struct WorkerOptions {
  std::string db;
  long long sweep_id = 0;
  std::string device = "cpu";  // "cpu" or "cuda" (pinned by CUDA_VISIBLE_DEVICES: uses cuda:0)
  double lease_seconds = 60;
  std::string gpu_index;       // physical GPU id(s) for provenance ("" on CPU; "2,3" for a group)
  std::string max_memory;      // group only: "0=BYTES,1=BYTES" per-GPU limits for the layer split
};

// The device string the worker's jobs load models on: "cpu", "cuda:0", or for a group of n
// GPUs "cuda:0@LIMIT,cuda:1@LIMIT,..." (a layer split, see core/model/placement.h).
std::string worker_device_string(const WorkerOptions& opt);

// Returns the process exit status: 0 when the sweep has nothing left to claim, 130 when stopped.
int run_worker(const WorkerOptions& opt);

}  // namespace kvx::runner
