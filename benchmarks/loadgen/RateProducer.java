// The benchmarks' load generator: Kafka's own Java producer sending pre-encoded records at a fixed rate.
//
//   java -cp '<kafka libs>/*' RateProducer.java <bootstrap> <records file> <rate per second>
//
// Records file: repeated (int32 length + bytes) for topic, key (-1 = null) and value, big-endian.
// Prints "ready" once the file is loaded and the producer connected, waits for a line on stdin,
// sends every record (token bucket, 100 ms burst, like rtml.simulator.TokenBucket), flushes and
// prints "done <records> <cpu seconds of this process while sending>". The Python producer used
// before this one spent ~120 us of CPU a record, which on a 2-core machine competed with the engine
// being measured; this one spends a few.
import java.io.BufferedReader;
import java.io.DataInputStream;
import java.io.BufferedInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class RateProducer {
    private static byte[] readField(DataInputStream in) throws Exception {
        int n = in.readInt();
        if (n < 0) return null;
        byte[] b = new byte[n];
        in.readFully(b);
        return b;
    }

    private static double cpuSeconds() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime() / 1e9;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        double rate = Double.parseDouble(args[2]);
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(new BufferedInputStream(new FileInputStream(args[1]), 1 << 20))) {
            while (true) {
                byte[] topic;
                try {
                    topic = readField(in);
                } catch (EOFException end) {
                    break;
                }
                records.add(new ProducerRecord<>(new String(topic, "UTF-8"), readField(in), readField(in)));
            }
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("linger.ms", "2");
        p.put("batch.size", String.valueOf(256 * 1024));
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            for (String topic : new java.util.TreeSet<>(records.stream().map(ProducerRecord::topic).toList())) {
                producer.partitionsFor(topic);  // metadata before the clock starts
            }
            System.out.println("ready");
            System.out.flush();
            new BufferedReader(new InputStreamReader(System.in)).readLine();
            double cpu0 = cpuSeconds();
            double capacity = Math.max(1.0, rate * 0.1), tokens = capacity;
            long last = System.nanoTime();
            for (ProducerRecord<byte[], byte[]> r : records) {
                while (true) {
                    long now = System.nanoTime();
                    tokens = Math.min(capacity, tokens + (now - last) / 1e9 * rate);
                    last = now;
                    if (tokens >= 1.0) break;
                    Thread.sleep(Math.max(5, (long) ((1.0 - tokens) / rate * 1000)));
                }
                tokens -= 1.0;
                producer.send(r);
            }
            producer.flush();
            System.out.println("done " + records.size() + " " + (cpuSeconds() - cpu0));
            System.out.flush();
        }
    }
}
