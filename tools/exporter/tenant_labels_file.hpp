// The agent's tenant-labels file (kube::read_tenant_labels, written under `gpushare agent
// --kubernetes`) as the exporter reads it for its scrapes: which namespace, pod and container
// each tenant is. The file is small and replaced by rename, so it is read again only when it is
// another file or has changed (device, inode, size, modification time).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <memory>
#include <mutex>
#include <string>

#include "prometheus.hpp"

namespace gpushare::exporter {

struct TenantLabelsReading {
  PodLabelsByTenant pods;
  // Why the file gave no labels, for a comment in the scrape and a log line; "" when it was read
  // or is missing (not under Kubernetes, or no pod known yet: no labels is then the truth).
  std::string problem;
};

class TenantLabelsFile {
 public:
  explicit TenantLabelsFile(std::string path) : path_(std::move(path)) {}

  // Safe to call from several server threads at once.
  std::shared_ptr<const TenantLabelsReading> read();

  const std::string& path() const { return path_; }

 private:
  struct Identity {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = -1;
    timespec modified{};
    bool operator==(const Identity& other) const;
  };
  std::shared_ptr<const TenantLabelsReading> read_anew() const;

  const std::string path_;
  std::mutex mutex_;
  Identity cached_identity_;
  std::shared_ptr<const TenantLabelsReading> cached_;
};

}  // namespace gpushare::exporter
