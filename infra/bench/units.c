/* What one arithmetic unit sustains, for the bench's ceilings: every core at once runs a loop of
 * independent instructions of one kind and nothing else (no loads, no stores), so the rate is the
 * unit's own, at the clock the cores hold while it runs. Where a unit lowers the clock (AMX and
 * AVX-512 can), this shows it; a peak from the instruction tables and the scalar clock cannot.
 *
 *   units KIND THREADS     KIND: fma256 | fma512 | dpbf16 | amx
 *
 * fma256 and fma512: vfmadd231ps on 12 accumulators (latency 4, two pipes: 8 in flight suffice);
 * dpbf16: AVX-512 BF16's vdpbf16ps, 12 accumulators; amx: tdpbf16ps on four 16x16 fp32 tiles from
 * two A and two B tiles of 16 rows x 64 bytes (a 2x2 block, as oneDNN's kernels use them).
 * The instructions are written in assembly, so the file builds with any gcc and the binary runs on
 * any x86-64 CPU; the bench asks only for a kind that /proc/cpuinfo lists. Prints the GFLOP/s of
 * all threads together. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Operands of every kind are read from here: random signs and mantissas, magnitudes about 1.
 * Zeros would flatter a unit: AMX ran 22% faster on zero tiles than on these (the same loop). */
static float operands[256] __attribute__((aligned(64)));
static uint16_t tiles[2048] __attribute__((aligned(64)));

static void fill(void) {
    uint32_t state = 2463534242u;
    for (int i = 0; i < 256; i++) {
        state ^= state << 13, state ^= state >> 17, state ^= state << 5;
        uint32_t bits = (state & 0x80000000u) | 0x3f800000u | (state & 0x007fffffu);
        memcpy(&operands[i], &bits, sizeof bits);
    }
    for (int i = 0; i < 2048; i++) {
        state ^= state << 13, state ^= state >> 17, state ^= state << 5;
        tiles[i] = (uint16_t)((state >> 16 & 0x8000u) | 0x3f80u | (state & 0x7fu));
    }
}

#define FMA12(w)                                                                              \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "0\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "1\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "2\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "3\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "4\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "5\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "6\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "7\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "8\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "9\n\t"                                          \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "10\n\t"                                         \
    "vfmadd231ps %%" w "15, %%" w "14, %%" w "11\n\t"

#define DP12                                                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm0\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm1\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm2\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm3\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm4\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm5\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm6\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm7\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm8\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm9\n\t"                                                  \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm10\n\t"                                                 \
    "vdpbf16ps %%zmm15, %%zmm14, %%zmm11\n\t"

/* Accumulators and the two operands from `operands` (%1); as fp32 or as pairs of bf16 alike,
 * numbers about 1 in size. */
#define LOAD(w)                                                                               \
    "vmovaps 0(%1), %%" w "0\n\t"                                                             \
    "vmovaps 64(%1), %%" w "1\n\t"                                                            \
    "vmovaps 128(%1), %%" w "2\n\t"                                                           \
    "vmovaps 192(%1), %%" w "3\n\t"                                                           \
    "vmovaps 256(%1), %%" w "4\n\t"                                                           \
    "vmovaps 320(%1), %%" w "5\n\t"                                                           \
    "vmovaps 384(%1), %%" w "6\n\t"                                                           \
    "vmovaps 448(%1), %%" w "7\n\t"                                                           \
    "vmovaps 512(%1), %%" w "8\n\t"                                                           \
    "vmovaps 576(%1), %%" w "9\n\t"                                                           \
    "vmovaps 640(%1), %%" w "10\n\t"                                                          \
    "vmovaps 704(%1), %%" w "11\n\t"                                                          \
    "vmovaps 768(%1), %%" w "14\n\t"                                                          \
    "vmovaps 832(%1), %%" w "15\n\t"

#define CLOBBERS                                                                              \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",  \
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc"

/* A loop of `n` rounds of BODY on registers of width W, the operands loaded first. */
#define VECTOR_LOOP(W, BODY, n)                                                               \
    __asm__ volatile(LOAD(W) "1:\n\t" BODY "dec %0\n\t"                                       \
                     "jnz 1b\n\t"                                                              \
                     "vzeroupper"                                                             \
                     : "+r"(n)                                                                \
                     : "r"(operands)                                                          \
                     : CLOBBERS)

/* Each runs `n` rounds and returns the FLOP of one round. */
static double fma256(long n) {
    VECTOR_LOOP("ymm", FMA12("ymm"), n);
    return 12 * 8 * 2;
}

static double fma512(long n) {
    VECTOR_LOOP("zmm", FMA12("zmm"), n);
    return 12 * 16 * 2;
}

static double dpbf16(long n) {
    VECTOR_LOOP("zmm", DP12, n);
    /* 16 fp32 lanes, each two bf16 products and their sum into the lane. */
    return 12 * 16 * 2 * 2;
}

struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64)));

static double amx(long n) {
    struct tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 8; i++) {
        config.bytes_per_row[i] = 64;
        config.rows[i] = 16;
    }
    __asm__ volatile("ldtilecfg %1\n\t"
                     "tilezero %%tmm0\n\t"
                     "tilezero %%tmm1\n\t"
                     "tilezero %%tmm2\n\t"
                     "tilezero %%tmm3\n\t"
                     "tileloadd (%2,%3,1), %%tmm4\n\t"
                     "tileloadd 1024(%2,%3,1), %%tmm5\n\t"
                     "tileloadd 512(%2,%3,1), %%tmm6\n\t"
                     "tileloadd 1536(%2,%3,1), %%tmm7\n\t"
                     "1:\n\t"
                     "tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n\t"
                     "tdpbf16ps %%tmm7, %%tmm4, %%tmm1\n\t"
                     "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n\t"
                     "tdpbf16ps %%tmm7, %%tmm5, %%tmm3\n\t"
                     "dec %0\n\t"
                     "jnz 1b\n\t"
                     "tilerelease"
                     : "+r"(n)
                     : "m"(config), "r"(tiles), "r"(64L)
                     : "cc", "memory");
    /* Each: a 16x32 bf16 tile times a 32x16 one, into 16x16 fp32. */
    return 4.0 * 16 * 16 * 32 * 2;
}

typedef double (*kernel)(long);

struct job {
    kernel run;
    double gflops;
};

static void *measure(void *arg) {
    struct job *job = arg;
    long rounds = 1000;
    double best = 0;
    /* Grow the loop until one pass takes 50 ms, then keep the best of five passes. */
    for (;;) {
        double start = seconds();
        double flop = job->run(rounds);
        double took = seconds() - start;
        if (took > 0.05) {
            best = flop * rounds / took;
            break;
        }
        rounds *= 2;
    }
    for (int pass = 0; pass < 4; pass++) {
        double start = seconds();
        double flop = job->run(rounds);
        double rate = flop * rounds / (seconds() - start);
        if (rate > best) best = rate;
    }
    job->gflops = best / 1e9;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: units fma256|fma512|dpbf16|amx [threads]\n");
        return 2;
    }
    kernel run = NULL;
    if (!strcmp(argv[1], "fma256")) run = fma256;
    if (!strcmp(argv[1], "fma512")) run = fma512;
    if (!strcmp(argv[1], "dpbf16")) run = dpbf16;
    if (!strcmp(argv[1], "amx")) {
        /* Linux hands a thread AMX's tile state only once the process asks for it. */
        if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) {
            perror("arch_prctl(ARCH_REQ_XCOMP_PERM)");
            return 1;
        }
        run = amx;
    }
    if (!run) {
        fprintf(stderr, "unknown kind %s\n", argv[1]);
        return 2;
    }
    fill();
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1) threads = 1;
    pthread_t *ids = calloc(threads, sizeof *ids);
    struct job *jobs = calloc(threads, sizeof *jobs);
    for (int i = 0; i < threads; i++) {
        jobs[i].run = run;
        pthread_create(&ids[i], NULL, measure, &jobs[i]);
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        sum += jobs[i].gflops;
    }
    printf("%.1f\n", sum);
    return 0;
}
