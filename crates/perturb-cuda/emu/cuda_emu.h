// cuda_emu.h: just enough CUDA to run kernels/*.cu on a CPU, so CI (which has no GPU) checks
// what the kernels compute, and whether they race, not only that they compile.
//
// Model. One std::thread per CUDA thread of a block; blocks run one after another (so
// `__shared__` can be a function-local static: it is never used by two blocks at once);
// __syncthreads and the warp shuffles are std::barrier rendezvous (acquire/release atomics, so
// ThreadSanitizer sees them as synchronisation). Inline PTX is not emulated: kernels keep a
// reference path for it under `#if __CUDA_ARCH__` (gemm.cu v3).
//
// The race check (tests/kernel_race.rs; crates/perturb-cuda/README.md, "Tests"):
// - race-check mode (emu::cfg.check, kernel_emu --check): every launch runs its grid twice, blocks in a seeded random order and then in the reverse
//   of that order (so every pair of blocks runs once each way round); the two results must be
//   bit-identical, which catches a block reading what another block writes;
// - each launch's buffers are classified by the kernel's parameter types: `const T*` inputs
//   must come out unchanged; `T*` outputs are filled with a poison pattern (a different one in
//   each run, so a kernel that happens to write the poison is still seen in the other run),
//   and after every block the words that differ from the poison are that block's writes, then
//   re-poisoned; a word written by two blocks is a cross-block conflict. Buffers a kernel reads
//   and writes are declared `emu::inout(buf)` (writes = words whose value changed, so a write of
//   the value already there is invisible); buffers updated with atomics by several blocks on
//   purpose are declared `emu::atomic(buf)` and left out of the conflict check;
// - with emu::cfg.serial, the threads of a block run one at a time, switching only at barriers,
//   shuffles and block ends, warps in a seeded order and lanes in a seeded order within each
//   warp, an order that the second run of race-check mode reverses: a result
//   that depends on which of two threads runs first between barriers differs between the runs,
//   deterministically, in a plain build (serial mode is refused under TSan, which it would blind);
// - built with -fsanitize=thread, TSan's shadow memory flags any shared or global word written
//   by one thread and read or written by another with no barrier between: a missing
//   __syncthreads, shared-memory reuse without a barrier, a warp-synchronous assumption (only
//   the shuffles synchronise a warp here, as on Volta and later);
// - built with -fsanitize=address,undefined, every access outside a buffer (each emu::Buf is
//   allocated to its exact size) or outside a shared array (`__forceinline__` is `static inline`
//   so the shared arrays of inline helpers are not COMDAT and get ASan redzones) aborts;
// - emu::cfg.drop_file/drop_line turn one __syncthreads() of the kernel sources into a no-op
//   (a mutation test: the race check must notice every barrier removed).
// What it cannot see: effects of blocks running concurrently on shared memory or caches (they
// never do here), the GPU memory model (weak ordering, missing __threadfence, volatile), reads
// of shared memory before any write (statics hold the previous block's values and are not
// poisoned), an overrun from one row of a multi-dimensional shared array into the next, lanes
// diverging around a shuffle, coalescing, bank conflicts, and speed.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <semaphore>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
using std::min; using std::max;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
// 16-byte alignment as in CUDA, so UBSan flags a float4 access through a misaligned pointer.
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
#define __global__
#define __device__
// static: the harness is one translation unit, and internal linkage keeps the function-static
// shared arrays of inline helpers out of COMDAT sections, which GCC's ASan does not instrument.
#define __forceinline__ static inline
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

namespace emu {

struct Config {
    bool check = false;       // two runs per launch in opposite block orders, write sets, const inputs
    bool serial = false;      // threads of a block one at a time, in a seeded order (plain builds)
    uint64_t seed = 1;        // block and thread orders derive from it (printed with every finding)
    std::string drop_file;    // basename of the source whose __syncthreads() at drop_line is skipped
    int drop_line = -1;
    bool list_barriers = false;
    std::string group;        // the harness's current test group, for messages and barrier lists
};
inline Config cfg;
inline int findings = 0;                     // race-check failures (the harness adds them to its count)
inline std::set<std::string> barrier_sites;  // "file:line group" when cfg.list_barriers
inline std::set<std::string> launched;       // kernel names launched, for coverage checks
inline uint64_t launch_no = 0;

inline uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// ---- buffers ------------------------------------------------------------------------------

struct Region { const void* base; size_t words; };
inline std::vector<Region> regions;  // every live Buf; touched by the host thread only

// A device buffer of 4-byte words, allocated to exactly its size (256-byte aligned, like
// cudaMalloc), so ASan's redzone starts at the first word past the end.
template <class T> class Buf {
    static_assert(sizeof(T) == 4, "emulated buffers hold 4-byte words");
    T* p_ = nullptr;
    size_t n_ = 0;
    void alloc(size_t n) {
        n_ = n;
        p_ = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(256)));
        regions.push_back({p_, n});
    }
    void release() {
        if (!p_) return;
        for (size_t i = 0; i < regions.size(); ++i)
            if (regions[i].base == p_) { regions.erase(regions.begin() + i); break; }
        ::operator delete(p_, std::align_val_t(256));
        p_ = nullptr; n_ = 0;
    }
public:
    Buf() = default;
    explicit Buf(size_t n, T fill = T{}) { alloc(n); std::fill(p_, p_ + n, fill); }
    template <class It> Buf(It b, It e) { alloc((size_t)std::distance(b, e)); std::copy(b, e, p_); }
    Buf(const Buf& o) { alloc(o.n_); std::copy(o.p_, o.p_ + o.n_, p_); }
    Buf(Buf&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
    Buf& operator=(const Buf& o) { if (this != &o) { release(); alloc(o.n_); std::copy(o.p_, o.p_ + o.n_, p_); } return *this; }
    Buf& operator=(Buf&& o) noexcept { if (this != &o) { release(); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; } return *this; }
    ~Buf() { release(); }
    T* data() { return p_; }
    const T* data() const { return p_; }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T& operator[](size_t i) { return p_[i]; }
    const T& operator[](size_t i) const { return p_[i]; }
    T* begin() { return p_; }
    T* end() { return p_ + n_; }
    const T* begin() const { return p_; }
    const T* end() const { return p_ + n_; }
};

template <class T> struct InOut { T* p; };
template <class T> struct Atomic { T* p; };
// A buffer the kernel reads and writes in place.
template <class T> InOut<T> inout(Buf<T>& b) { return {b.data()}; }
// A buffer several blocks update with atomics on purpose: not checked for conflicts.
template <class T> Atomic<T> atomic(Buf<T>& b) { return {b.data()}; }

enum class Role { In, Out, InOut, Atomic };
template <class T> T* unwrap(Buf<T>& b) { return b.data(); }
template <class T> const T* unwrap(const Buf<T>& b) { return b.data(); }
template <class T> T* unwrap(InOut<T> b) { return b.p; }
template <class T> T* unwrap(Atomic<T> b) { return b.p; }
template <class T> T&& unwrap(T&& v) { return std::forward<T>(v); }
template <class A> struct RoleOf { static constexpr int v = 0; };
template <class T> struct RoleOf<InOut<T>> { static constexpr int v = 1; };
template <class T> struct RoleOf<Atomic<T>> { static constexpr int v = 2; };

// ---- barriers and the serial scheduler ---------------------------------------------------

// Rendezvous points of a block: 0 = __syncthreads, 1 = end of the block, 2 + w = warp w's
// shuffle. Concurrent mode maps them to std::barrier; serial mode to the Serial scheduler.
enum : unsigned { kBlockBar = 0, kBlockEnd = 1, kWarp0 = 2 };

// Serial mode (cfg.serial): one thread of the block runs at a time, and when it reaches a
// rendezvous the runnable thread with the highest seeded priority runs next, so between two
// barriers the threads run one after another in a seeded order (the reverse order in a
// race-check's second run: every pair of threads meets once each way round). Deterministic
// for a seed; it totally orders every access, so it is for plain builds, never under TSan.
struct Serial {
    std::mutex m;
    std::vector<std::unique_ptr<std::binary_semaphore>> go;
    std::vector<unsigned> prio;    // smaller runs first
    std::vector<int> waiting;      // rendezvous a thread waits at; -1 runnable, -2 finished
    std::vector<unsigned> need, arrived;
    std::function<void()> on_block_end;
    int pick() const {
        int best = -1;
        for (size_t t = 0; t < prio.size(); ++t)
            if (waiting[t] == -1 && (best < 0 || prio[t] < prio[best])) best = (int)t;
        return best;
    }
    void pass(unsigned self, int next, bool self_blocked) {
        if (next < 0) {
            if (self_blocked) { fprintf(stderr, "emu: serial scheduler deadlock (divergent barrier?)\n"); abort(); }
            return;
        }
        if ((unsigned)next == self) return;
        go[next]->release();
        if (self_blocked) go[self]->acquire();
    }
    void arrive(unsigned t, unsigned id) {
        std::unique_lock<std::mutex> lk(m);
        waiting[t] = (int)id;
        if (++arrived[id] == need[id]) {
            arrived[id] = 0;
            if (id == kBlockEnd && on_block_end) on_block_end();
            for (int& w : waiting)
                if (w == (int)id) w = -1;
        }
        const int next = pick();
        const bool blocked = waiting[t] != -1 || next != (int)t;
        lk.unlock();
        pass(t, next, blocked);
    }
    void finish(unsigned t) {
        std::unique_lock<std::mutex> lk(m);
        waiting[t] = -2;
        const int next = pick();
        lk.unlock();
        pass(t, next, false);
    }
};

inline std::barrier<>* block_bar;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
inline std::vector<std::vector<uint32_t>> warp_slot;
inline Serial* serial;  // non-null while a serial-mode grid runs

inline unsigned lin_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline void rendezvous(unsigned id) {
    if (serial) return serial->arrive(lin_tid(), id);
    if (id == kBlockBar) block_bar->arrive_and_wait();
    else warp_bar[id - kWarp0]->arrive_and_wait();
}

inline const char* base_name(const char* f) {
    const char* s = strrchr(f, '/');
    return s ? s + 1 : f;
}

inline void syncthreads(const char* file, int line) {
    if (cfg.list_barriers && lin_tid() == 0)  // one writer per launch; the host reads after join
        barrier_sites.insert(std::string(base_name(file)) + ":" + std::to_string(line) + " " + cfg.group);
    if (line == cfg.drop_line && cfg.drop_file == base_name(file)) return;  // the mutation
    rendezvous(kBlockBar);
}

// ---- launches -----------------------------------------------------------------------------

// Runs `body` for every block of `order`: one host thread per CUDA thread of a block, reused
// for every block; `after_block(i)` runs on one thread once all threads finished order[i].
// `sched_seed` orders the threads in serial mode; `reverse` reverses that order.
inline void run_blocks(dim3 block, const std::vector<dim3>& order, const std::function<void()>& body,
                       const std::function<void(size_t)>& after_block, uint64_t sched_seed, bool reverse) {
    blockDim = block;
    const unsigned nt = block.x * block.y * block.z, nw = (nt + 31) / 32;
    std::barrier<> bar(nt);
    block_bar = &bar;
    warp_bar.clear();
    warp_slot.assign(nw, std::vector<uint32_t>(64));
    for (unsigned w = 0; w < nw; ++w) warp_bar.emplace_back(new std::barrier<>(std::min(32u, nt - w * 32)));
    size_t pos = 0;
    auto block_done = [&] {
        if (after_block) after_block(pos);
        ++pos;
    };
    struct Done {
        std::function<void()>* f;
        void operator()() noexcept { (*f)(); }
    };
    std::function<void()> done_fn = block_done;
    std::barrier<Done> between(nt, Done{&done_fn});
    std::unique_ptr<Serial> sch;
    if (cfg.serial) {
#if defined(__SANITIZE_THREAD__)
        fprintf(stderr, "emu: serial mode orders every access and would hide races from TSan\n");
        abort();
#endif
        sch = std::make_unique<Serial>();
        for (unsigned t = 0; t < nt; ++t) sch->go.emplace_back(new std::binary_semaphore(0));
        // Warp-major: warps in a seeded order, lanes in a seeded order within each warp, so one
        // warp can run far ahead of another (as warps do on a GPU) and lanes still interleave.
        std::vector<unsigned> wperm(nw), lperm(32);
        for (unsigned w = 0; w < nw; ++w) wperm[w] = w;
        for (unsigned l = 0; l < 32; ++l) lperm[l] = l;
        auto fy = [&](std::vector<unsigned>& v) {  // Fisher-Yates, our own so seeds reproduce
            for (size_t i = v.size(); i > 1; --i) {
                sched_seed = mix(sched_seed);
                std::swap(v[i - 1], v[sched_seed % i]);
            }
        };
        fy(wperm);
        fy(lperm);
        sch->prio.resize(nt);
        for (unsigned t = 0; t < nt; ++t) {
            const unsigned r = wperm[t / 32] * 32 + lperm[t % 32];
            sch->prio[t] = reverse ? ~r : r;
        }
        sch->waiting.assign(nt, -1);
        sch->need.assign(kWarp0 + nw, nt);
        for (unsigned w = 0; w < nw; ++w) sch->need[kWarp0 + w] = std::min(32u, nt - w * 32);
        sch->arrived.assign(kWarp0 + nw, 0);
        sch->on_block_end = block_done;
        serial = sch.get();
    }
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < nt; ++t) {
        ts.emplace_back([&, t] {
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            if (sch) sch->go[t]->acquire();
            for (const dim3& b : order) {
                blockIdx = b;
                body();
                if (sch) sch->arrive(t, kBlockEnd);
                else between.arrive_and_wait();
            }
            if (sch) sch->finish(t);
        });
    }
    if (sch) {
        std::unique_lock<std::mutex> lk(sch->m);
        const int first = sch->pick();
        lk.unlock();
        sch->go[first]->release();
    }
    for (auto& t : ts) t.join();
    serial = nullptr;
}

inline std::vector<dim3> grid_order(dim3 grid) {
    std::vector<dim3> o;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) o.push_back({x, y, z});
    return o;
}

inline void shuffle(std::vector<dim3>& v, uint64_t seed) {  // Fisher-Yates, our own so seeds reproduce
    for (size_t i = v.size(); i > 1; --i) {
        seed = mix(seed);
        std::swap(v[i - 1], v[seed % i]);
    }
}

struct Binding {
    Role role;
    uint32_t* base;
    size_t words;
    int arg;
};

inline const Region* find_region(const void* p) {
    for (const Region& r : regions) {
        const char* b = static_cast<const char*>(r.base);
        if (p >= b && p < b + 4 * r.words) return &r;
    }
    return nullptr;
}

inline void finding(const char* kernel, const std::string& what) {
    ++findings;
    printf("RACE-CHECK FAIL [%s] %s: %s (seed %llu, launch %llu)\n", cfg.group.c_str(), kernel, what.c_str(),
           (unsigned long long)cfg.seed, (unsigned long long)launch_no);
}

inline std::string fmt_dim(dim3 d) {
    return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// Poison words, one per run: NaN patterns no kernel computes.
inline constexpr uint32_t kPoison[2] = {0x7fa5a5a5u, 0xffc35a5au};

// The race-checked launch: two runs in opposite block orders over the same starting state.
inline void checked_run(const char* name, dim3 grid, dim3 block, std::vector<Binding> binds,
                        const std::function<void()>& body) {
    // The same buffer passed twice counts once, with its most permissive role.
    std::vector<Binding> bs;
    for (const Binding& b : binds) {
        auto it = std::find_if(bs.begin(), bs.end(), [&](const Binding& o) { return o.base == b.base; });
        if (it == bs.end()) bs.push_back(b);
        else if (it->role == Role::In || b.role == Role::Atomic) it->role = b.role;
        else if (it->role == Role::Out && b.role == Role::InOut) it->role = Role::InOut;
    }
    std::vector<std::vector<uint32_t>> pre(bs.size()), fin[2], snap(bs.size()), result(bs.size());
    std::vector<std::vector<int64_t>> owner(bs.size());
    for (size_t i = 0; i < bs.size(); ++i) pre[i].assign(bs[i].base, bs[i].base + bs[i].words);
    std::vector<dim3> order[2];
    order[0] = grid_order(grid);
    shuffle(order[0], mix(cfg.seed ^ mix(launch_no)));
    order[1].assign(order[0].rbegin(), order[0].rend());
    int conflicts = 0;
    for (int run = 0; run < 2; ++run) {
        for (size_t i = 0; i < bs.size(); ++i) {
            Binding& b = bs[i];
            if (b.role == Role::In) continue;
            owner[i].assign(b.words, -1);
            if (b.role == Role::Out) {
                std::fill(b.base, b.base + b.words, kPoison[run]);
                result[i] = pre[i];
            } else {
                std::copy(pre[i].begin(), pre[i].end(), b.base);
                snap[i] = pre[i];
            }
        }
        std::function<void(size_t)> after = [&](size_t pos) {
            const dim3 blk = order[run][pos];
            for (size_t i = 0; i < bs.size(); ++i) {
                Binding& b = bs[i];
                if (b.role == Role::In || b.role == Role::Atomic) continue;
                const uint32_t* ref = b.role == Role::Out ? nullptr : snap[i].data();
                for (size_t w = 0; w < b.words; ++w) {
                    const uint32_t was = ref ? ref[w] : kPoison[run];
                    if (b.base[w] == was) continue;
                    if (owner[i][w] >= 0 && conflicts++ < 5)
                        finding(name, "argument " + std::to_string(b.arg) + " word " + std::to_string(w) +
                                          " written by blocks " + fmt_dim(order[run][owner[i][w]]) + " and " +
                                          fmt_dim(blk) + " (run " + std::to_string(run) + ")");
                    owner[i][w] = (int64_t)pos;
                    if (b.role == Role::Out) {
                        result[i][w] = b.base[w];
                        b.base[w] = kPoison[run];
                    } else {
                        snap[i][w] = b.base[w];
                    }
                }
            }
        };
        run_blocks(block, order[run], body, after, mix(cfg.seed ^ mix(launch_no)), run == 1);
        fin[run].resize(bs.size());
        for (size_t i = 0; i < bs.size(); ++i) {
            Binding& b = bs[i];
            if (b.role == Role::In) continue;
            if (b.role == Role::Out) std::copy(result[i].begin(), result[i].end(), b.base);
            fin[run][i].assign(b.base, b.base + b.words);
        }
    }
    for (size_t i = 0; i < bs.size(); ++i) {
        const Binding& b = bs[i];
        if (b.role == Role::In) {
            for (size_t w = 0; w < b.words; ++w)
                if (b.base[w] != pre[i][w]) {
                    finding(name, "const argument " + std::to_string(b.arg) + " changed at word " + std::to_string(w));
                    break;
                }
            continue;
        }
        for (size_t w = 0; w < b.words; ++w)
            if (fin[0][i][w] != fin[1][i][w]) {
                char msg[320];
                snprintf(msg, sizeof msg,
                         "argument %d word %zu differs between the two runs (%08x vs %08x; block order, and thread "
                         "order if serial, reversed): a block or thread reads what another writes with no "
                         "barrier between, or an output is read before it is written (declare it inout)",
                         b.arg, w, fin[0][i][w], fin[1][i][w]);
                finding(name, msg);
                break;
            }
    }
}

template <class... P, class... A, size_t... I>
void launch_impl(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::index_sequence<I...>,
                 A&&... args) {
    launched.insert(name);
    ++launch_no;
    gridDim = grid;
    std::tuple<P...> kargs{static_cast<P>(unwrap(args))...};
    std::function<void()> body = [&] { std::apply(kernel, kargs); };
    if (!cfg.check) {
        run_blocks(block, grid_order(grid), body, {}, mix(cfg.seed ^ mix(launch_no)), false);
        return;
    }
    std::vector<Binding> binds;
    auto bind = [&]<size_t K, class Pk, class Ak>() {
        if constexpr (std::is_pointer_v<Pk>) {
            const void* ptr = std::get<K>(kargs);
            const Region* r = find_region(ptr);
            if (!r) {
                finding(name, "pointer argument " + std::to_string(K) + " is not an emu::Buf");
                return;
            }
            constexpr int decl = RoleOf<std::decay_t<Ak>>::v;
            Role role = decl == 1 ? Role::InOut
                        : decl == 2 ? Role::Atomic
                        : std::is_const_v<std::remove_pointer_t<Pk>> ? Role::In
                                                                     : Role::Out;
            binds.push_back({role, (uint32_t*)r->base, r->words, (int)K});
        }
    };
    (bind.template operator()<I, P, A>(), ...);
    checked_run(name, grid, block, binds, body);
}

// Runs the grid. Without cfg.check: blocks in grid order, once. With it: see checked_run.
template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "argument count differs from the kernel's");
    launch_impl(name, kernel, grid, block, std::index_sequence_for<P...>{}, std::forward<A>(args)...);
}

}  // namespace emu

#define LAUNCH(kernel, ...) emu::launch(#kernel, kernel, __VA_ARGS__)
#define __syncthreads() emu::syncthreads(__FILE__, __LINE__)

inline void __trap() { fprintf(stderr, "__trap\n"); abort(); }
// A shuffle is one rendezvous of the warp: lanes post their value in this shuffle's slot row,
// wait, read. Rows alternate, so a lane writing row r again (two shuffles later) has passed the
// barrier that every lane reaches only after its read of row r.
inline thread_local unsigned shfl_phase;
inline uint32_t shfl_exchange(uint32_t bits, unsigned src_lane) {
    const unsigned t = emu::lin_tid(), w = t / 32, l = t % 32, row = shfl_phase++ & 1;
    emu::warp_slot[w][row * 32 + l] = bits;
    emu::rendezvous(emu::kWarp0 + w);
    return emu::warp_slot[w][row * 32 + (src_lane & 31)];
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    static_assert(sizeof(T) == 4, "4-byte shuffles only");
    uint32_t bits; memcpy(&bits, &v, 4);
    const uint32_t r = shfl_exchange(bits, (emu::lin_tid() % 32) ^ (unsigned)o);
    T out; memcpy(&out, &r, 4); return out;
}
template <class T> T __shfl_sync(unsigned, T v, int src) {
    static_assert(sizeof(T) == 4, "4-byte shuffles only");
    uint32_t bits; memcpy(&bits, &v, 4);
    const uint32_t r = shfl_exchange(bits, (unsigned)src);
    T out; memcpy(&out, &r, 4); return out;
}
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline unsigned atomicOr(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_or(v); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
