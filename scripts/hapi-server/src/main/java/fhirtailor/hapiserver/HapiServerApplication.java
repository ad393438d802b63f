package fhirtailor.hapiserver;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.data.jpa.JpaRepositoriesAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;

/**
 * A HAPI FHIR JPA server (R4, embedded H2) for fhir-tailor's integration tests and local trials.
 *
 * <p>Spring Boot gives us the embedded Tomcat, the H2 connection pool (from the
 * {@code spring.datasource.*} properties) and property binding; everything FHIR comes from
 * HAPI's own configuration classes, imported by {@link JpaStorageConfig},
 * {@link RestServerConfig} and {@link ClinicalReasoningConfig}.
 *
 * <p>Three auto-configurations are excluded because HAPI sets up the same thing itself and two
 * copies would clash: the JPA entity manager (HAPI needs its own persistence provider and
 * entity packages), Spring Data repositories (HAPI's {@code JpaConfig} enables its own) and
 * Quartz (HAPI's scheduler service owns its Quartz schedulers). The Elasticsearch client ones
 * are excluded because HAPI's Hibernate Search dependency puts that client on the classpath and
 * Boot would then poll localhost:9200 for cluster nodes; full-text search is off here. Flyway
 * and Thymeleaf come with HAPI's jars too and have nothing to do here (Hibernate creates the
 * schema; no HTML pages are served).
 */
@SpringBootApplication(
        exclude = {
            HibernateJpaAutoConfiguration.class,
            JpaRepositoriesAutoConfiguration.class,
            QuartzAutoConfiguration.class
        },
        excludeName = {
            "org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration",
            "org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration",
            "org.springframework.boot.autoconfigure.elasticsearch.ReactiveElasticsearchClientAutoConfiguration",
            "org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration",
            "org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration"
        })
public class HapiServerApplication {

    public static void main(String[] args) {
        SpringApplication.run(HapiServerApplication.class, args);
    }
}
