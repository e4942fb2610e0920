package strata.recorder;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;

/**
 * Runs Debezium's PostgreSQL connector in the embedded engine at its default
 * settings (only what is needed to connect: host, port, user, database,
 * topic.prefix, pgoutput, offsets in memory) and writes every record it emits
 * — key and value as the JSON strings the engine's Json format gives, a
 * tombstone's value as null — one JSON object per line.
 *
 * Two engines run, each on its own slot, over the same changes:
 * "with-schema" at the converter's defaults, "schemaless" with
 * converter.schemas.enable=false (the other setting in common use).
 *
 * Protocol with record.sh, through files in the work directory: the recorder
 * writes "ready" once both snapshots are complete; record.sh then runs the
 * streamed changes and the recorder stops once both engines have delivered
 * the last change (the insert of composite (9, 'end')) and then been idle
 * for two seconds (so the records following it, if any, are in).
 *
 * Arguments: host port database workdir.
 */
public final class Recorder {
    private static final ObjectMapper MAPPER = new ObjectMapper();

    /** One engine and what it wrote. */
    private static final class Capture implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> {
        final String label;
        final BufferedWriter out;
        final AtomicBoolean snapshotDone = new AtomicBoolean();
        final AtomicBoolean sawEnd = new AtomicBoolean();
        final AtomicLong lastRecordAt = new AtomicLong(System.currentTimeMillis());
        DebeziumEngine<ChangeEvent<String, String>> engine;

        Capture(String label, Path file) throws IOException {
            this.label = label;
            this.out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING);
        }

        @Override
        public void handleBatch(java.util.List<ChangeEvent<String, String>> records, DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
                throws InterruptedException {
            try {
                for (ChangeEvent<String, String> r : records) {
                    Map<String, Object> line = new LinkedHashMap<>();
                    line.put("topic", r.destination());
                    line.put("key", r.key());
                    line.put("value", r.value());
                    synchronized (out) {
                        out.write(MAPPER.writeValueAsString(line));
                        out.newLine();
                        out.flush();
                    }
                    inspect(r.value());
                    committer.markProcessed(r);
                }
                committer.markBatchFinished();
                lastRecordAt.set(System.currentTimeMillis());
            } catch (IOException e) {
                throw new RuntimeException("writing " + label + " records", e);
            }
        }

        private void inspect(String value) throws IOException {
            if (value == null) {
                return;
            }
            JsonNode v = MAPPER.readTree(value);
            JsonNode payload = v.has("payload") && v.has("schema") ? v.get("payload") : v;
            String snapshot = payload.path("source").path("snapshot").asText("");
            if (snapshot.equals("last")) {
                snapshotDone.set(true);
            }
            JsonNode after = payload.path("after");
            if (payload.path("source").path("table").asText("").equals("composite") && after.path("b").asText("").equals("end")) {
                sawEnd.set(true);
            }
        }
    }

    private static Properties config(String host, String port, String database, String slot, boolean schemas) {
        Properties p = new Properties();
        p.setProperty("name", "recorder-" + slot);
        p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        p.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
        p.setProperty("database.hostname", host);
        p.setProperty("database.port", port);
        p.setProperty("database.user", "postgres");
        p.setProperty("database.password", "");
        p.setProperty("database.dbname", database);
        // The stream name strata's test uses, so that topic and schema names compare.
        p.setProperty("topic.prefix", "main");
        p.setProperty("plugin.name", "pgoutput");
        // Two engines need two slots; the first keeps the default name.
        if (!slot.equals("debezium")) {
            p.setProperty("slot.name", slot);
        }
        if (!schemas) {
            p.setProperty("converter.schemas.enable", "false");
        }
        return p;
    }

    private static Capture start(ExecutorService pool, Properties config, String label, Path file) throws IOException {
        Capture c = new Capture(label, file);
        c.engine = DebeziumEngine.create(Json.class).using(config).notifying(c).using((success, message, error) -> {
            if (!success) {
                System.err.println("recorder: engine " + label + " stopped: " + message);
                if (error != null) {
                    error.printStackTrace();
                }
            }
        }).build();
        pool.execute(c.engine);
        return c;
    }

    private static void await(String what, java.util.function.BooleanSupplier done, long seconds) throws InterruptedException {
        long deadline = System.currentTimeMillis() + seconds * 1000;
        while (!done.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("recorder: timed out waiting for " + what);
            }
            Thread.sleep(100);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Recorder HOST PORT DATABASE WORKDIR");
            System.exit(2);
        }
        String host = args[0], port = args[1], database = args[2];
        Path work = Path.of(args[3]);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        // One after the other: the first creates the publication (dbz_publication,
        // FOR ALL TABLES), the second finds it.
        Capture withSchema = start(pool, config(host, port, database, "debezium", true), "with-schema", work.resolve("with-schema.jsonl"));
        await("the with-schema snapshot", withSchema.snapshotDone::get, 180);
        Capture schemaless = start(pool, config(host, port, database, "debezium_schemaless", false), "schemaless", work.resolve("schemaless.jsonl"));
        await("the schemaless snapshot", schemaless.snapshotDone::get, 180);
        Files.writeString(work.resolve("ready"), "ready\n");
        for (Capture c : new Capture[] {withSchema, schemaless}) {
            await("the last change in " + c.label, c.sawEnd::get, 180);
            await("the " + c.label + " engine to go idle", () -> System.currentTimeMillis() - c.lastRecordAt.get() > 2000, 60);
        }
        for (Capture c : new Capture[] {withSchema, schemaless}) {
            c.engine.close();
            c.out.close();
        }
        pool.shutdown();
        pool.awaitTermination(60, TimeUnit.SECONDS);
        System.exit(0);
    }
}
