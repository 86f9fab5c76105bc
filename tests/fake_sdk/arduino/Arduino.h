/* Stub of the Arduino API parts port/arduino uses (tests/fake_sdk/README.md): Print::write(uint8_t),
 * Print::write(const uint8_t *, size_t), Stream::available/read, the USB serial's begin() and
 * operator bool (ArduinoCore-API Print.h / Stream.h / HardwareSerial.h), micros(). */
#ifndef STUB_ARDUINO_H
#define STUB_ARDUINO_H
#include <stddef.h>
#include <stdint.h>

class Print {
public:
    virtual ~Print() {}
    virtual size_t write(uint8_t) = 0;
    virtual size_t write(const uint8_t *buffer, size_t size);
};

class Stream : public Print {
public:
    virtual int available() = 0;
    virtual int read() = 0;
    virtual int peek() = 0;
};

class HardwareSerial : public Stream {
public:
    virtual void begin(unsigned long baudrate) = 0;
    virtual void end() = 0;
    virtual operator bool() = 0;
};

class SerialUSBStub : public HardwareSerial {
public:
    void begin(unsigned long baudrate) override;
    void end() override;
    int available() override;
    int read() override;
    int peek() override;
    size_t write(uint8_t c) override;
    size_t write(const uint8_t *buf, size_t size) override;
    using Print::write;
    operator bool() override;
};

extern SerialUSBStub Serial;

unsigned long micros(void);
unsigned long millis(void);

void setup(void);
void loop(void);
#endif
