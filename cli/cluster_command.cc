// strata cluster up | status | down: a local deployment as child processes.
#include <chrono>
#include <memory>
#include <string>

#include "cli/cluster_control.h"
#include "cli/cluster_up.h"
#include "cli/commands.h"

namespace strata::cli {

void AddClusterCommand(CLI::App& app, int* exit_code) {
  CLI::App* cluster = app.add_subcommand(
      "cluster", "Run a local cluster (router + replicas of tp x pp workers) on 127.0.0.1");
  cluster->require_subcommand(1);

  auto up = std::make_shared<ClusterUpOptions>();
  CLI::App* up_command = cluster->add_subcommand(
      "up",
      "Start a router and worker replicas, wait until all are healthy, print the router's "
      "address; serve until Ctrl-C, or with --detach return and leave them running");
  up_command->add_option("--model", up->model_dir, "Model folder (config.json, *.safetensors)")
      ->required();
  up_command->add_option("--replicas", up->replicas, "Replicas behind the router")
      ->capture_default_str();
  up_command->add_option("--tp", up->tp, "Tensor-parallel ranks per pipeline stage")
      ->capture_default_str();
  up_command->add_option("--pp", up->pp, "Pipeline stages per replica")->capture_default_str();
  up_command->add_option("--state-dir", up->state_dir,
                         "Folder for the cluster's state (cluster.json) and logs/; required "
                         "with --detach (default in the foreground: a new folder under /tmp)");
  up_command->add_flag("--detach", up->detach,
                       "Return once healthy (stdout: the router's address); the processes keep "
                       "running until `strata cluster down`");
  up_command->add_option("--build-dir", up->build_dir,
                         "Build tree with worker/service/strata-worker and router/strata-router "
                         "(default: next to this strata binary)");
  up_command
      ->add_option("--threads", up->threads,
                   "CPU threads per worker rank (0: the cores shared among all ranks)")
      ->capture_default_str();
  up_command->add_option("--router-port", up->router_port, "Router port (0: any free port)")
      ->capture_default_str();
  up_command
      ->add_option("--startup-timeout", up->startup_timeout_seconds,
                   "Seconds to wait for every process to be healthy")
      ->capture_default_str();
  up_command
      ->add_option("--grace", up->grace_seconds, "On stop, seconds between SIGTERM and SIGKILL")
      ->capture_default_str();
  up_command->add_option("--sample-prompt", up->sample_prompt,
                         "Once up, stream a completion of this text through the router");
  up_command->callback([up, exit_code] { *exit_code = RunClusterUp(*up); });

  struct StatusFlags {
    std::string state_dir;
    bool json = false;
  };
  auto status = std::make_shared<StatusFlags>();
  CLI::App* status_command = cluster->add_subcommand(
      "status", "List the cluster's processes: pid, addresses, healthy (alive and SERVING)");
  status_command->add_option("--state-dir", status->state_dir, "The folder given to `up`")
      ->required();
  status_command->add_flag("--json", status->json,
                           "One line: {\"processes\": [{\"role\", \"replica\", \"rank\", \"pid\", "
                           "\"address\", \"metrics_address\", \"healthy\"}]}");
  status_command->callback(
      [status, exit_code] { *exit_code = RunClusterStatus(status->state_dir, status->json); });

  struct DownFlags {
    std::string state_dir;
    int grace_seconds = 10;
  };
  auto down = std::make_shared<DownFlags>();
  CLI::App* down_command = cluster->add_subcommand(
      "down", "Stop every process of the cluster (SIGTERM, then SIGKILL after --grace)");
  down_command->add_option("--state-dir", down->state_dir, "The folder given to `up`")->required();
  down_command->add_option("--grace", down->grace_seconds, "Seconds between SIGTERM and SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  down_command->callback([down, exit_code] {
    *exit_code = RunClusterDown(down->state_dir, std::chrono::seconds(down->grace_seconds));
  });
}

}  // namespace strata::cli
