// The wire format between the agent and its clients (tenant processes and tools) over a Unix
// stream socket. Every message is a 12-byte header followed by a typed payload:
//   magic u32 | frame version u16 | type u16 | payload length u32      (all little-endian)
// The frame version covers this layout only; the protocol's version travels in Hello, so that a
// newer client is told "unsupported version" in a message it can read instead of being cut off.
// The payload is at most kMaxPayloadBytes. Integers are little-endian; a string is a u16 length
// followed by that many bytes (no NUL). A decoder is handed untrusted bytes: it never reads past
// them, and rejects a bad magic, version, type or length, a short or over-long payload, and an
// out-of-range field with an Error, never an exception.
//
// A tenant process: Hello -> Welcome (its tenant), Join -> Joined (its slot, with its private page
// passed alongside as a file descriptor), AttachGpu -> GpuAttached per GPU, then Lease -> LeaseReply
// whenever its lease of quota on a GPU is too small, and LeaseTrim when it holds too much unspent;
// SliceWanted, SliceDone and SliceRenew for time slices (answered through the shared state). After
// its agent died, Hello -> Welcome and Rejoin -> Joined (with the state only) with the next one.
// An administrator's tool: Hello (kind kAdministrator: no tenant is assigned), then QuotaSet or
// PolicyReload -> AdminReply, or Error kPermissionDenied for anyone but root and the admin group.
// New types take new numbers; old numbers never change.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "core/result.hpp"
#include "core/shared_state.hpp"  // kAgentSocketPath
#include "core/state_layout.hpp"

namespace gpushare::agent {

inline constexpr std::uint32_t kProtocolMagic = 0x41535047;  // "GPSA" on the wire
inline constexpr std::uint16_t kFrameVersion = 1;
inline constexpr std::uint16_t kProtocolVersion = 1;
inline constexpr std::size_t kHeaderBytes = 12;
inline constexpr std::size_t kMaxPayloadBytes = 4096;
inline constexpr std::size_t kMaxMessageBytes = kHeaderBytes + kMaxPayloadBytes;

enum class MessageType : std::uint16_t {
  kHello = 1,         // client -> agent, first message of every connection
  kWelcome = 2,       // agent -> client, the answer to Hello
  kPing = 3,          // client -> agent
  kPong = 4,          // agent -> client
  kError = 5,         // agent -> client
  kAdminRequest = 6,  // client -> agent, root and the admin group only
  kAdminReply = 7,    // agent -> client
  kJoin = 8,          // tenant -> agent, after Welcome
  kJoined = 9,        // agent -> tenant, with the private page's descriptor and the state's (read-only)
  kAttachGpu = 10,    // tenant -> agent
  kGpuAttached = 11,  // agent -> tenant
  kLease = 12,        // tenant -> agent: more quota to spend on a GPU
  kLeaseReply = 13,   // agent -> tenant
  kLeaseTrim = 14,    // tenant -> agent: take back what is unspent beyond one lease (no answer)
  kSliceWanted = 15,  // tenant -> agent: it has marked itself waiting for a GPU (no answer)
  kSliceDone = 16,    // tenant -> agent: asked to hand over, it has drained (no answer)
  kSliceRenew = 17,   // tenant -> agent: its slice is over (no answer)
  kRejoin = 18,       // tenant -> restarted agent, with its private page: answered with Joined
  // 20..29: typed administration requests, answered with AdminReply or Error.
  kQuotaSet = 20,      // administrator -> agent: change a live tenant's limits
  kPolicyReload = 21,  // administrator -> agent: re-read the policy file
};
inline constexpr std::uint16_t kLastMessageType = 18;
inline constexpr std::uint16_t kFirstAdminMessageType = 20;
inline constexpr std::uint16_t kLastAdminMessageType = 21;
constexpr bool is_admin_message(MessageType type) {
  return type == MessageType::kAdminRequest || (static_cast<std::uint16_t>(type) >= kFirstAdminMessageType &&
                                                static_cast<std::uint16_t>(type) <= kLastAdminMessageType);
}
// The unspent quota a process may keep on a GPU, for a tenant limit of `limit_bytes` (kUnlimited:
// none): a sixty-fourth of the limit, between 2 MiB and 64 MiB. A process asks the agent to take
// back what it holds beyond twice this (LeaseTrim).
constexpr std::uint64_t lease_chunk_bytes(std::uint64_t limit_bytes) {
  constexpr std::uint64_t kMinLease = 2ull << 20;
  constexpr std::uint64_t kMaxLease = 64ull << 20;
  const std::uint64_t part = limit_bytes / 64;
  return part < kMinLease ? kMinLease : part > kMaxLease ? kMaxLease : part;
}
// GPU record indices on the wire are checked against the state's table.
inline constexpr std::uint32_t kMaxGpuRecords = layout::kMaxGpus;

// kAdministrator: a tool that only administers (`gpushare quota set`, `gpushare agent reload`); the
// policy assigns it no tenant, so root is welcomed even when no rule names it.
enum class ClientKind : std::uint8_t { kTenant = 1, kTool = 2, kAdministrator = 3 };

enum class ErrorCode : std::uint16_t {
  kMalformed = 1,           // the message could not be decoded
  kUnsupportedVersion = 2,  // Hello asked for a protocol this agent does not speak
  kNotWelcomed = 3,         // a request before Hello, or a second Hello
  kPermissionDenied = 4,    // an admin request from someone who is not an administrator
  kRequestFailed = 5,       // the request was understood but could not be carried out
};

// Who the kernel says is at the other end of the socket (SO_PEERCRED), in the agent's namespaces.
struct PeerCredentials {
  std::int32_t pid = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  friend bool operator==(const PeerCredentials&, const PeerCredentials&) = default;
};

struct Hello {
  ClientKind kind = ClientKind::kTenant;
  std::uint16_t protocol_version = kProtocolVersion;
  friend bool operator==(const Hello&, const Hello&) = default;
};
struct Welcome {
  bool accepted = false;
  std::string tenant_or_refusal;  // the tenant assigned, or why the client is refused
  PeerCredentials peer;           // the identity the agent saw
  friend bool operator==(const Welcome&, const Welcome&) = default;
};
struct Ping {
  std::uint64_t nonce = 0;
  friend bool operator==(const Ping&, const Ping&) = default;
};
struct Pong {
  std::uint64_t nonce = 0;
  friend bool operator==(const Pong&, const Pong&) = default;
};
struct ErrorMessage {
  ErrorCode code = ErrorCode::kMalformed;
  std::string text;
  friend bool operator==(const ErrorMessage&, const ErrorMessage&) = default;
};
struct AdminRequest {
  std::string command;
  friend bool operator==(const AdminRequest&, const AdminRequest&) = default;
};
struct AdminReply {
  std::string text;
  friend bool operator==(const AdminReply&, const AdminReply&) = default;
};

// A tenant's wishes for its compute policy: they may only lower what the policy grants.
inline constexpr std::uint8_t kNoPriorityWish = 0xff;
struct Join {
  std::uint32_t share_pct = 0;  // 0: none asked
  std::uint32_t limit_pct = 0;  // 0: none asked
  std::uint8_t priority = kNoPriorityWish;
  friend bool operator==(const Join&, const Join&) = default;
};
struct Joined {
  std::uint32_t slot = 0;
  std::uint32_t tenant_index = 0;
  std::string tenant;
  std::uint32_t share_pct = 0;
  std::uint32_t limit_pct = 0;
  std::uint8_t priority = 0;
  friend bool operator==(const Joined&, const Joined&) = default;
};
struct AttachGpu {
  std::array<std::uint8_t, 16> uuid{};
  std::uint32_t ordinal = 0;            // the tenant's device ordinal (for memory_per_gpu)
  std::uint64_t physical_bytes = 0;
  std::uint64_t wanted_limit_bytes = 0;  // the tenant's own limit (kUnlimited: none); only lowers
  std::string name;
  friend bool operator==(const AttachGpu&, const AttachGpu&) = default;
};
struct GpuAttached {
  std::uint32_t gpu = 0;  // the state's GPU record
  std::uint64_t limit_bytes = 0;
  friend bool operator==(const GpuAttached&, const GpuAttached&) = default;
};
struct Lease {
  std::uint32_t gpu = 0;
  std::uint64_t bytes = 0;  // what the allocation under way needs
  friend bool operator==(const Lease&, const Lease&) = default;
};
struct LeaseReply {
  std::uint32_t gpu = 0;
  bool granted = false;  // the bytes asked for are charged to the process (the rest goes to its lease)
  friend bool operator==(const LeaseReply&, const LeaseReply&) = default;
};
struct LeaseTrim {
  std::uint32_t gpu = 0;
  friend bool operator==(const LeaseTrim&, const LeaseTrim&) = default;
};

// Time slices (core/compute_gate.hpp's SliceBroker, agent/slice_service.hpp).
struct SliceWanted {
  std::uint32_t gpu = 0;
  friend bool operator==(const SliceWanted&, const SliceWanted&) = default;
};
struct SliceDone {
  std::uint32_t gpu = 0;
  std::uint32_t slice_seen = 0;  // the schedule's grant_seq when the process began to drain
  std::uint64_t drained_at_ns = 0;  // when its drain ended (CLOCK_MONOTONIC); the agent clamps it
  friend bool operator==(const SliceDone&, const SliceDone&) = default;
};
struct SliceRenew {
  std::uint32_t gpu = 0;
  friend bool operator==(const SliceRenew&, const SliceRenew&) = default;
};

// A process whose agent died, to the new one: the slot it had, for its tenant (its page passed along).
struct Rejoin {
  std::uint32_t slot = 0;
  std::uint32_t tenant_index = 0;
  friend bool operator==(const Rejoin&, const Rejoin&) = default;
};

// `gpushare quota set`: what is given changes, the rest stays. share_pct 1-100, limit_pct 0-100
// (0: no cap), priority a Priority (0-2).
struct QuotaSet {
  std::string tenant;  // not empty
  std::optional<std::uint64_t> memory_bytes;
  std::optional<std::uint32_t> share_pct;
  std::optional<std::uint32_t> limit_pct;
  std::optional<std::uint8_t> priority;
  friend bool operator==(const QuotaSet&, const QuotaSet&) = default;
};
// Re-read the agent's --policy file (as SIGHUP does); the reply says what changed or why not.
struct PolicyReload {
  friend bool operator==(const PolicyReload&, const PolicyReload&) = default;
};

using Message = std::variant<Hello, Welcome, Ping, Pong, ErrorMessage, AdminRequest, AdminReply, Join, Joined,
                             AttachGpu, GpuAttached, Lease, LeaseReply, LeaseTrim, SliceWanted, SliceDone, SliceRenew,
                             Rejoin, QuotaSet, PolicyReload>;

MessageType message_type(const Message& message);
// SliceWanted, SliceDone or SliceRenew.
bool is_slice_message(const Message& message);
std::string_view message_type_name(MessageType type);

// Header and payload, ready to write. REQUIRES: every string fits a u16 length and the payload
// fits kMaxPayloadBytes (longer texts are cut to fit).
std::string encode(const Message& message);

struct Header {
  MessageType type = MessageType::kHello;
  std::uint32_t payload_bytes = 0;
};
// REQUIRES: bytes.size() >= kHeaderBytes (only the first kHeaderBytes are read).
Result<Header> decode_header(std::string_view bytes);
// The payload of a message whose header was accepted; it must be consumed exactly.
Result<Message> decode_payload(MessageType type, std::string_view payload);

// One message from the front of a stream of bytes: nullopt while the bytes are a correct but
// incomplete prefix of a message, an Error as soon as they cannot be one (a wrong first byte of
// the magic is enough), else the message and how many bytes it took.
struct Frame {
  Message message;
  std::size_t consumed_bytes = 0;
};
Result<std::optional<Frame>> decode_frame(std::string_view bytes);

}  // namespace gpushare::agent
