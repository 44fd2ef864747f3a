// libpng (1.6) for the image decoder and the test encoder. libpng reports errors by longjmp, which Swift cannot catch,
// so the whole read and write live here as static inline C functions that return 0 or -1 with a one-line message.
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// A PNG held in memory being read, and the message of the error that stopped the read.
typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    char message[240];
} shim_png_reader;

/// A PNG being written to a growing malloc'ed buffer (the caller frees `data`), and the message of the error.
typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
    char message[240];
} shim_png_writer;

static inline const char *shim_png_reader_message(const shim_png_reader *reader) { return reader->message; }
static inline const char *shim_png_writer_message(const shim_png_writer *writer) { return writer->message; }

static void shim_png_error(png_structp png, png_const_charp message) {
    char *buffer = (char *)png_get_error_ptr(png);
    snprintf(buffer, 240, "%s", message ? message : "unknown libpng error");
    png_longjmp(png, 1);
}

static void shim_png_warning(png_structp png, png_const_charp message) { (void)png; (void)message; }

static void shim_png_read_data(png_structp png, png_bytep out, size_t count) {
    shim_png_reader *reader = (shim_png_reader *)png_get_io_ptr(png);
    if (count > reader->size - reader->offset) png_error(png, "the file ends early (truncated PNG)");
    memcpy(out, reader->data + reader->offset, count);
    reader->offset += count;
}

/// Reads the PNG in `reader` as 8-bit RGB, row-major (H, W, 3): palette and gray expanded, tRNS and alpha channels
/// dropped (not composited), 16-bit samples reduced to their high byte (value >> 8), gAMA/sRGB/iCCP chunks ignored
/// (as Pillow's `convert("RGB")` does). With `pixels` NULL it reads only the header into *width and *height; otherwise
/// `pixels` must hold width * height * 3 bytes. Returns 0, or -1 with reader->message set.
static inline int shim_png_read_rgb(shim_png_reader *reader, png_uint_32 *width, png_uint_32 *height,
                                    unsigned char *pixels) {
    reader->offset = 0;
    reader->message[0] = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, reader->message, shim_png_error, shim_png_warning);
    if (!png) { snprintf(reader->message, 240, "libpng could not start (out of memory)"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(reader->message, 240, "libpng could not start (out of memory)");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, reader, shim_png_read_data);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    *width = w;
    *height = h;
    if (pixels) {
        png_set_expand(png);
        png_set_strip_16(png);
        png_set_strip_alpha(png);
        png_set_gray_to_rgb(png);
        int passes = png_set_interlace_handling(png);
        png_read_update_info(png, info);
        size_t rowBytes = (size_t)w * 3;
        if (png_get_rowbytes(png, info) != rowBytes) png_error(png, "unexpected row size after conversion to RGB");
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, pixels + (size_t)y * rowBytes, NULL);
        png_read_end(png, NULL);
    }
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

static void shim_png_write_data(png_structp png, png_bytep bytes, size_t count) {
    shim_png_writer *writer = (shim_png_writer *)png_get_io_ptr(png);
    if (count > writer->capacity - writer->size) {
        size_t capacity = writer->capacity ? writer->capacity * 2 : 4096;
        while (capacity - writer->size < count) capacity *= 2;
        unsigned char *grown = (unsigned char *)realloc(writer->data, capacity);
        if (!grown) png_error(png, "out of memory writing the PNG");
        writer->data = grown;
        writer->capacity = capacity;
    }
    memcpy(writer->data + writer->size, bytes, count);
    writer->size += count;
}

static void shim_png_flush(png_structp png) { (void)png; }

/// Writes a PNG of `colorType` (PNG_COLOR_TYPE_GRAY, _GRAY_ALPHA, _RGB, _RGB_ALPHA, _PALETTE) and `bitDepth` into
/// writer->data. `pixels`: rows of `rowBytes` bytes, 16-bit samples big-endian. `palette`: `paletteCount` RGB triples
/// (PALETTE only); `alphas`: `alphaCount` tRNS entries or NULL. Returns 0, or -1 with writer->message set.
static inline int shim_png_write(shim_png_writer *writer, png_uint_32 width, png_uint_32 height, int bitDepth,
                                 int colorType, int interlaced, const unsigned char *pixels, size_t rowBytes,
                                 const unsigned char *palette, int paletteCount,
                                 const unsigned char *alphas, int alphaCount) {
    writer->message[0] = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, writer->message, shim_png_error, shim_png_warning);
    if (!png) { snprintf(writer->message, 240, "libpng could not start (out of memory)"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(writer->message, 240, "libpng could not start (out of memory)");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, writer, shim_png_write_data, shim_png_flush);
    png_set_IHDR(png, info, width, height, bitDepth, colorType,
                 interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (colorType == PNG_COLOR_TYPE_PALETTE) {
        png_color entries[256];
        if (!palette || paletteCount < 1 || paletteCount > 256) png_error(png, "a palette PNG needs 1-256 colours");
        for (int i = 0; i < paletteCount; i++) {
            entries[i].red = palette[3 * i];
            entries[i].green = palette[3 * i + 1];
            entries[i].blue = palette[3 * i + 2];
        }
        png_set_PLTE(png, info, entries, paletteCount);
    }
    if (alphas && alphaCount > 0) png_set_tRNS(png, info, alphas, alphaCount, NULL);
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int pass = 0; pass < passes; pass++)
        for (png_uint_32 y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * rowBytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}
