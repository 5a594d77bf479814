#include "protocol.hpp"

#include <algorithm>
#include <array>
#include <type_traits>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {

constexpr std::size_t kMaxStringBytes = kMaxPayloadBytes - 64;  // leaves room for a message's other fields

class Writer {
 public:
  void u8(std::uint8_t value) { bytes_.push_back(static_cast<char>(value)); }
  void u16(std::uint16_t value) { little_endian(value, 2); }
  void u32(std::uint32_t value) { little_endian(value, 4); }
  void u64(std::uint64_t value) { little_endian(value, 8); }
  void text(std::string_view value) {
    value = value.substr(0, kMaxStringBytes);
    if (const auto nul = value.find('\0'); nul != std::string_view::npos) value = value.substr(0, nul);
    u16(static_cast<std::uint16_t>(value.size()));
    bytes_.append(value);
  }
  std::string take() { return std::move(bytes_); }

 private:
  void little_endian(std::uint64_t value, int width) {
    for (int i = 0; i < width; ++i) bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
  std::string bytes_;
};

// Reads fields from untrusted bytes: every read checks what is left, and the first failure sticks,
// so a decoder reads all its fields and asks once at the end.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(little_endian(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(little_endian(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(little_endian(4)); }
  std::uint64_t u64() { return little_endian(8); }
  std::string text() {
    const std::size_t length = u16();
    if (failed_ || length > bytes_.size() - offset_) return fail("a string runs past the end of the message"), "";
    std::string value(bytes_.substr(offset_, length));
    offset_ += length;
    if (value.find('\0') != std::string::npos) return fail("a string holds a NUL byte"), "";
    return value;
  }
  void fail(std::string why) {
    if (!failed_) why_ = std::move(why);
    failed_ = true;
  }
  // The error of the first failed read, or of bytes left over.
  std::optional<Error> finish(MessageType type) const {
    if (!failed_ && offset_ == bytes_.size()) return std::nullopt;
    const std::string why = failed_ ? why_ : fmt::format("{} bytes left over", bytes_.size() - offset_);
    return Error{fmt::format("malformed {} message: {}", message_type_name(type), why)};
  }

 private:
  std::uint64_t little_endian(std::size_t width) {
    if (failed_ || width > bytes_.size() - offset_) return fail("the message is too short"), 0;
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i) {
      value |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(bytes_[offset_ + i])) << (8 * i);
    }
    offset_ += width;
    return value;
  }
  std::string_view bytes_;
  std::size_t offset_ = 0;
  bool failed_ = false;
  std::string why_;
};

void write_payload(Writer& out, const Hello& hello) {
  out.u8(static_cast<std::uint8_t>(hello.kind));
  out.u16(hello.protocol_version);
}
void write_payload(Writer& out, const Welcome& welcome) {
  out.u8(welcome.accepted ? 1 : 0);
  out.u32(static_cast<std::uint32_t>(welcome.peer.pid));
  out.u32(welcome.peer.uid);
  out.u32(welcome.peer.gid);
  out.text(welcome.tenant_or_refusal);
}
void write_payload(Writer& out, const Ping& ping) { out.u64(ping.nonce); }
void write_payload(Writer& out, const Pong& pong) { out.u64(pong.nonce); }
void write_payload(Writer& out, const ErrorMessage& error) {
  out.u16(static_cast<std::uint16_t>(error.code));
  out.text(error.text);
}
void write_payload(Writer& out, const AdminRequest& request) { out.text(request.command); }
void write_payload(Writer& out, const AdminReply& reply) { out.text(reply.text); }
void write_payload(Writer& out, const Join& join) {
  out.u32(join.share_pct);
  out.u32(join.limit_pct);
  out.u8(join.priority);
}
void write_payload(Writer& out, const Joined& joined) {
  out.u32(joined.slot);
  out.u32(joined.tenant_index);
  out.u32(joined.share_pct);
  out.u32(joined.limit_pct);
  out.u8(joined.priority);
  out.text(joined.tenant);
}
void write_payload(Writer& out, const AttachGpu& attach) {
  for (const std::uint8_t byte : attach.uuid) out.u8(byte);
  out.u32(attach.ordinal);
  out.u64(attach.physical_bytes);
  out.u64(attach.wanted_limit_bytes);
  out.text(attach.name);
}
void write_payload(Writer& out, const GpuAttached& attached) {
  out.u32(attached.gpu);
  out.u64(attached.limit_bytes);
}
void write_payload(Writer& out, const Lease& lease) {
  out.u32(lease.gpu);
  out.u64(lease.bytes);
}
void write_payload(Writer& out, const LeaseReply& reply) {
  out.u32(reply.gpu);
  out.u8(reply.granted ? 1 : 0);
}
void write_payload(Writer& out, const LeaseTrim& trim) { out.u32(trim.gpu); }
void write_payload(Writer& out, const SliceWanted& wanted) { out.u32(wanted.gpu); }
void write_payload(Writer& out, const SliceDone& done) {
  out.u32(done.gpu);
  out.u32(done.slice_seen);
  out.u64(done.drained_at_ns);
}
void write_payload(Writer& out, const SliceRenew& renew) { out.u32(renew.gpu); }
void write_payload(Writer& out, const Rejoin& rejoin) {
  out.u32(rejoin.slot);
  out.u32(rejoin.tenant_index);
}
// A flag per optional field, then every field (0 when absent), then the tenant.
constexpr std::uint8_t kQuotaMemory = 1, kQuotaShare = 2, kQuotaLimit = 4, kQuotaPriority = 8;
void write_payload(Writer& out, const QuotaSet& quota) {
  out.u8(static_cast<std::uint8_t>((quota.memory_bytes ? kQuotaMemory : 0) | (quota.share_pct ? kQuotaShare : 0) |
                                   (quota.limit_pct ? kQuotaLimit : 0) | (quota.priority ? kQuotaPriority : 0)));
  out.u64(quota.memory_bytes.value_or(0));
  out.u32(quota.share_pct.value_or(0));
  out.u32(quota.limit_pct.value_or(0));
  out.u8(quota.priority.value_or(0));
  out.text(quota.tenant);
}
void write_payload(Writer&, const PolicyReload&) {}

std::uint8_t read_flag(Reader& in, std::string_view what) {
  const std::uint8_t flag = in.u8();
  if (flag > 1) in.fail(fmt::format("{} is neither 0 nor 1", what));
  return flag;
}
std::uint8_t read_priority(Reader& in, bool may_be_absent) {
  const std::uint8_t priority = in.u8();
  if (priority >= 3 && !(may_be_absent && priority == kNoPriorityWish)) in.fail(fmt::format("priority {}", priority));
  return priority;
}
// A GPU record index (the state has kMaxGpus of them; the wire carries no more than that).
std::uint32_t read_gpu(Reader& in) {
  const std::uint32_t gpu = in.u32();
  if (gpu >= kMaxGpuRecords) in.fail(fmt::format("GPU record {} out of range", gpu));
  return gpu;
}
Message read_hello(Reader& in) {
  Hello hello;
  const std::uint8_t kind = in.u8();
  if (kind != static_cast<std::uint8_t>(ClientKind::kTenant) && kind != static_cast<std::uint8_t>(ClientKind::kTool) &&
      kind != static_cast<std::uint8_t>(ClientKind::kAdministrator)) {
    in.fail(fmt::format("unknown client kind {}", kind));
  }
  hello.kind = static_cast<ClientKind>(kind);
  hello.protocol_version = in.u16();
  return hello;
}
Message read_welcome(Reader& in) {
  Welcome welcome;
  welcome.accepted = read_flag(in, "the accepted flag") == 1;
  welcome.peer.pid = static_cast<std::int32_t>(in.u32());
  welcome.peer.uid = in.u32();
  welcome.peer.gid = in.u32();
  welcome.tenant_or_refusal = in.text();
  return welcome;
}
Message read_error(Reader& in) {
  ErrorMessage error;
  const std::uint16_t code = in.u16();
  if (code < static_cast<std::uint16_t>(ErrorCode::kMalformed) ||
      code > static_cast<std::uint16_t>(ErrorCode::kRequestFailed)) {
    in.fail(fmt::format("unknown error code {}", code));
  }
  error.code = static_cast<ErrorCode>(code);
  error.text = in.text();
  return error;
}

Message read_join(Reader& in) {
  Join join;
  join.share_pct = in.u32();
  join.limit_pct = in.u32();
  join.priority = read_priority(in, true);
  if (join.share_pct > 100 || join.limit_pct > 100) in.fail("a share or limit over 100");
  return join;
}
Message read_joined(Reader& in) {
  Joined joined;
  joined.slot = in.u32();
  joined.tenant_index = in.u32();
  joined.share_pct = in.u32();
  joined.limit_pct = in.u32();
  joined.priority = read_priority(in, false);
  joined.tenant = in.text();
  return joined;
}
Message read_attach(Reader& in) {
  AttachGpu attach;
  for (auto& byte : attach.uuid) byte = in.u8();
  attach.ordinal = in.u32();
  attach.physical_bytes = in.u64();
  attach.wanted_limit_bytes = in.u64();
  attach.name = in.text();
  return attach;
}

Message read_quota_set(Reader& in) {
  QuotaSet quota;
  const std::uint8_t given = in.u8();
  if ((given & ~(kQuotaMemory | kQuotaShare | kQuotaLimit | kQuotaPriority)) != 0) {
    in.fail(fmt::format("unknown QuotaSet fields {:#04x}", given));
  }
  const std::uint64_t memory = in.u64();
  const std::uint32_t share = in.u32();
  const std::uint32_t limit = in.u32();
  const std::uint8_t priority = in.u8();
  quota.tenant = in.text();
  // An absent field is 0, so that one request has one encoding.
  const auto field = [&]<typename T>(std::uint8_t bit, T value, std::string_view what) -> std::optional<T> {
    if ((given & bit) != 0) return value;
    if (value != 0) in.fail(fmt::format("{} is not given but not 0", what));
    return std::nullopt;
  };
  quota.memory_bytes = field(kQuotaMemory, memory, "memory");
  quota.share_pct = field(kQuotaShare, share, "share");
  quota.limit_pct = field(kQuotaLimit, limit, "limit");
  quota.priority = field(kQuotaPriority, priority, "priority");
  if (quota.share_pct && (*quota.share_pct == 0 || *quota.share_pct > 100)) in.fail("a share outside 1-100");
  if (quota.limit_pct && *quota.limit_pct > 100) in.fail("a limit over 100");
  if (quota.priority && *quota.priority >= 3) in.fail(fmt::format("priority {}", *quota.priority));
  if (quota.tenant.empty()) in.fail("no tenant named");
  return quota;
}

bool known_type(std::uint16_t type) {
  return (type >= static_cast<std::uint16_t>(MessageType::kHello) && type <= kLastMessageType) ||
         (type >= kFirstAdminMessageType && type <= kLastAdminMessageType);
}

}  // namespace

MessageType message_type(const Message& message) {
  return std::visit(
      [](const auto& typed) {
        using T = std::decay_t<decltype(typed)>;
        if constexpr (std::is_same_v<T, Hello>) return MessageType::kHello;
        if constexpr (std::is_same_v<T, Welcome>) return MessageType::kWelcome;
        if constexpr (std::is_same_v<T, Ping>) return MessageType::kPing;
        if constexpr (std::is_same_v<T, Pong>) return MessageType::kPong;
        if constexpr (std::is_same_v<T, ErrorMessage>) return MessageType::kError;
        if constexpr (std::is_same_v<T, AdminRequest>) return MessageType::kAdminRequest;
        if constexpr (std::is_same_v<T, AdminReply>) return MessageType::kAdminReply;
        if constexpr (std::is_same_v<T, Join>) return MessageType::kJoin;
        if constexpr (std::is_same_v<T, Joined>) return MessageType::kJoined;
        if constexpr (std::is_same_v<T, AttachGpu>) return MessageType::kAttachGpu;
        if constexpr (std::is_same_v<T, GpuAttached>) return MessageType::kGpuAttached;
        if constexpr (std::is_same_v<T, Lease>) return MessageType::kLease;
        if constexpr (std::is_same_v<T, LeaseReply>) return MessageType::kLeaseReply;
        if constexpr (std::is_same_v<T, LeaseTrim>) return MessageType::kLeaseTrim;
        if constexpr (std::is_same_v<T, SliceWanted>) return MessageType::kSliceWanted;
        if constexpr (std::is_same_v<T, SliceDone>) return MessageType::kSliceDone;
        if constexpr (std::is_same_v<T, SliceRenew>) return MessageType::kSliceRenew;
        if constexpr (std::is_same_v<T, Rejoin>) return MessageType::kRejoin;
        if constexpr (std::is_same_v<T, QuotaSet>) return MessageType::kQuotaSet;
        if constexpr (std::is_same_v<T, PolicyReload>) return MessageType::kPolicyReload;
      },
      message);
}

bool is_slice_message(const Message& message) {
  return std::holds_alternative<SliceWanted>(message) || std::holds_alternative<SliceDone>(message) ||
         std::holds_alternative<SliceRenew>(message);
}

std::string_view message_type_name(MessageType type) {
  switch (type) {
    case MessageType::kHello: return "Hello";
    case MessageType::kWelcome: return "Welcome";
    case MessageType::kPing: return "Ping";
    case MessageType::kPong: return "Pong";
    case MessageType::kError: return "Error";
    case MessageType::kAdminRequest: return "AdminRequest";
    case MessageType::kAdminReply: return "AdminReply";
    case MessageType::kJoin: return "Join";
    case MessageType::kJoined: return "Joined";
    case MessageType::kAttachGpu: return "AttachGpu";
    case MessageType::kGpuAttached: return "GpuAttached";
    case MessageType::kLease: return "Lease";
    case MessageType::kLeaseReply: return "LeaseReply";
    case MessageType::kLeaseTrim: return "LeaseTrim";
    case MessageType::kSliceWanted: return "SliceWanted";
    case MessageType::kSliceDone: return "SliceDone";
    case MessageType::kSliceRenew: return "SliceRenew";
    case MessageType::kRejoin: return "Rejoin";
    case MessageType::kQuotaSet: return "QuotaSet";
    case MessageType::kPolicyReload: return "PolicyReload";
  }
  return "unknown";
}

std::string encode(const Message& message) {
  Writer payload;
  std::visit([&payload](const auto& typed) { write_payload(payload, typed); }, message);
  const std::string body = payload.take();
  Writer frame;
  frame.u32(kProtocolMagic);
  frame.u16(kFrameVersion);
  frame.u16(static_cast<std::uint16_t>(message_type(message)));
  frame.u32(static_cast<std::uint32_t>(body.size()));
  std::string bytes = frame.take();
  bytes += body;
  return bytes;
}

Result<Header> decode_header(std::string_view bytes) {
  Reader in(bytes.substr(0, kHeaderBytes));
  const std::uint32_t magic = in.u32();
  const std::uint16_t version = in.u16();
  const std::uint16_t type = in.u16();
  const std::uint32_t payload_bytes = in.u32();
  if (in.finish(MessageType::kHello)) return Error{"a message header is shorter than 12 bytes"};
  if (magic != kProtocolMagic) return Error{fmt::format("bad magic {:#010x} (not a gpushare agent client)", magic)};
  if (version != kFrameVersion) {
    return Error{fmt::format("frame version {} (this agent reads {})", version, kFrameVersion)};
  }
  if (!known_type(type)) return Error{fmt::format("unknown message type {}", type)};
  if (payload_bytes > kMaxPayloadBytes) {
    return Error{fmt::format("a payload of {} bytes (at most {})", payload_bytes, kMaxPayloadBytes)};
  }
  return Header{static_cast<MessageType>(type), payload_bytes};
}

Result<Message> decode_payload(MessageType type, std::string_view payload) {
  if (payload.size() > kMaxPayloadBytes) return Error{"a payload over the maximum size"};
  Reader in(payload);
  Message message;
  switch (type) {
    case MessageType::kHello: message = read_hello(in); break;
    case MessageType::kWelcome: message = read_welcome(in); break;
    case MessageType::kPing: message = Ping{in.u64()}; break;
    case MessageType::kPong: message = Pong{in.u64()}; break;
    case MessageType::kError: message = read_error(in); break;
    case MessageType::kAdminRequest: message = AdminRequest{in.text()}; break;
    case MessageType::kAdminReply: message = AdminReply{in.text()}; break;
    case MessageType::kJoin: message = read_join(in); break;
    case MessageType::kJoined: message = read_joined(in); break;
    case MessageType::kAttachGpu: message = read_attach(in); break;
    case MessageType::kGpuAttached: {
      const std::uint32_t gpu = read_gpu(in);
      message = GpuAttached{gpu, in.u64()};
      break;
    }
    case MessageType::kLease: {
      const std::uint32_t gpu = read_gpu(in);
      message = Lease{gpu, in.u64()};
      break;
    }
    case MessageType::kLeaseReply: {
      const std::uint32_t gpu = read_gpu(in);
      message = LeaseReply{gpu, read_flag(in, "the granted flag") == 1};
      break;
    }
    case MessageType::kLeaseTrim: message = LeaseTrim{read_gpu(in)}; break;
    case MessageType::kSliceWanted: message = SliceWanted{read_gpu(in)}; break;
    case MessageType::kSliceDone: {
      const std::uint32_t gpu = read_gpu(in);
      const std::uint32_t seen = in.u32();
      message = SliceDone{gpu, seen, in.u64()};
      break;
    }
    case MessageType::kSliceRenew: message = SliceRenew{read_gpu(in)}; break;
    case MessageType::kRejoin: {
      const std::uint32_t slot = in.u32();
      message = Rejoin{slot, in.u32()};
      break;
    }
    case MessageType::kQuotaSet: message = read_quota_set(in); break;
    case MessageType::kPolicyReload: message = PolicyReload{}; break;
    default: return Error{fmt::format("unknown message type {}", static_cast<unsigned>(type))};
  }
  if (auto error = in.finish(type)) return *error;
  return message;
}

Result<std::optional<Frame>> decode_frame(std::string_view bytes) {
  // A stream whose first bytes already differ from the magic is rejected before a whole header.
  std::array<char, 4> magic{};
  for (std::size_t i = 0; i < magic.size(); ++i) magic[i] = static_cast<char>((kProtocolMagic >> (8 * i)) & 0xff);
  const std::size_t prefix = std::min(bytes.size(), magic.size());
  if (!std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(prefix), magic.begin())) {
    return Error{"bad magic (not a gpushare agent client)"};
  }
  if (bytes.size() < kHeaderBytes) return std::optional<Frame>{};
  auto header = decode_header(bytes);
  if (!header) return header.error();
  if (bytes.size() - kHeaderBytes < header->payload_bytes) return std::optional<Frame>{};
  auto message = decode_payload(header->type, bytes.substr(kHeaderBytes, header->payload_bytes));
  if (!message) return message.error();
  return std::optional<Frame>{Frame{std::move(message).value(), kHeaderBytes + header->payload_bytes}};
}

}  // namespace gpushare::agent
