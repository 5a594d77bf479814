#include "tenant_labels_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "tenant_labels.hpp"

namespace gpushare::exporter {

bool TenantLabelsFile::Identity::operator==(const Identity& other) const {
  return device == other.device && inode == other.inode && size == other.size &&
         modified.tv_sec == other.modified.tv_sec && modified.tv_nsec == other.modified.tv_nsec;
}

std::shared_ptr<const TenantLabelsReading> TenantLabelsFile::read() {
  struct stat status {};
  if (::stat(path_.c_str(), &status) != 0) {
    const int error = errno;
    auto reading = std::make_shared<TenantLabelsReading>();
    if (error != ENOENT && error != ENOTDIR) {
      reading->problem = fmt::format("tenant labels not used: cannot stat {}: {}", path_, std::strerror(error));
    }
    return reading;
  }
  const Identity identity{status.st_dev, status.st_ino, status.st_size, status.st_mtim};
  const std::lock_guard lock(mutex_);
  if (!cached_ || !(identity == cached_identity_)) {
    // Replaced after the stat above: this reading is of the newer file, and the next scrape sees
    // another identity and reads it once more. Never an older file under a newer identity.
    cached_ = read_anew();
    cached_identity_ = identity;
  }
  return cached_;
}

std::shared_ptr<const TenantLabelsReading> TenantLabelsFile::read_anew() const {
  auto reading = std::make_shared<TenantLabelsReading>();
  auto by_tenant = kube::read_tenant_labels(path_);
  if (!by_tenant) {
    reading->problem = fmt::format("tenant labels not used: {}", by_tenant.error().message);
    return reading;
  }
  for (const auto& [tenant, labels] : *by_tenant) {
    reading->pods.emplace(tenant, PodLabels{labels.namespace_name, labels.pod, labels.container});
  }
  return reading;
}

}  // namespace gpushare::exporter
