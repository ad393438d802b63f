package fhirtailor.hapiserver;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import javax.sql.DataSource;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * The storage side: HAPI's JPA DAOs for R4 on an H2 database, and the batch2 job framework that
 * runs Bulk Data {@code $export}.
 *
 * <ul>
 *   <li>{@link JpaR4Config} brings the R4 FhirContext, one DAO and resource provider per resource
 *       type, the system DAO (transactions, history) and, through {@code JpaConfig}, search,
 *       terminology ({@code ValueSet/$expand}), the scheduler and the batch2 support beans.
 *   <li>{@link HapiJpaConfig} adds the pieces {@code JpaConfig} leaves to the application: the
 *       database-backed paging provider (search result pages survive between requests), the
 *       stale search cleaner and the resource-count cache the CapabilityStatement uses.
 *   <li>{@link JpaBatch2Config} stores batch2 jobs in the database and registers the bulk export
 *       job definition; {@link Batch2JobsConfig} adds the job steps ($export among them).
 *   <li>{@link SubscriptionChannelConfig} is here only for its in-memory broker client: batch2
 *       hands work chunks to its workers through it. No subscription support is switched on.
 * </ul>
 *
 * <p>What HAPI leaves to us: the storage settings, the partition settings (unpartitioned), the
 * entity manager factory and the transaction manager.
 */
@Configuration
@Import({
    JpaR4Config.class,
    HapiJpaConfig.class,
    JpaBatch2Config.class,
    Batch2JobsConfig.class,
    SubscriptionChannelConfig.class,
    ThreadPoolFactoryConfig.class
})
public class JpaStorageConfig {

    /**
     * Server behaviour the tests rely on. Everything not set here keeps HAPI's default:
     * versioned updates with ETags, conditional create/update/delete, transactions and
     * {@code _lastUpdated} are on out of the box.
     */
    @Bean
    public JpaStorageSettings storageSettings() {
        JpaStorageSettings settings = new JpaStorageSettings();
        // A conditional DELETE whose URL matches several resources deletes them all (as the
        // FHIR spec allows) instead of failing with 412.
        settings.setAllowMultipleDelete(true);
        // HAPI answers a search repeated within 60 s from its first result list, even when
        // resources were written since: a test that writes then searches (or $apply, whose CQL
        // retrieves are searches) would see stale data.
        settings.setReuseCachedSearchResultsForMillis(null);
        // Every $export kick-off starts a new job: reusing an earlier job's result would hide
        // what was written since.
        settings.setEnableBulkExportJobReuse(false);
        // Run the next batch2 step as soon as the previous one ends instead of waiting for the
        // next maintenance pass, so a small export finishes in seconds.
        settings.setJobFastTrackingEnabled(true);
        // Clients may choose any id on PUT (numeric ones too), like other FHIR servers; the
        // ids the server assigns are then UUIDs so they can never collide with a client's.
        settings.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
        settings.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
        return settings;
    }

    /**
     * Batch2 starts a queued job (a new {@code $export}) only on a maintenance pass, every minute
     * by default: once a second, an export of a small test server is ready in a few seconds.
     * Set before the scheduler registers the pass, hence a bean post-processor.
     */
    @Bean
    public static BeanPostProcessor batch2MaintenanceEverySecond() {
        return new BeanPostProcessor() {
            @Override
            public Object postProcessBeforeInitialization(Object bean, String beanName) {
                if (bean instanceof JobMaintenanceServiceImpl maintenance) {
                    maintenance.setScheduledJobFrequencyMillis(1000);
                }
                return bean;
            }
        };
    }

    /** One unpartitioned store: the default settings. */
    @Bean
    public PartitionSettings partitionSettings() {
        return new PartitionSettings();
    }

    /**
     * HAPI's entity manager factory (its persistence provider and entity packages) on the Spring
     * Boot data source. The schema is created by Hibernate on the empty H2 database each start;
     * Hibernate Search (full-text indexing) is off: the tests do not use {@code _text} or
     * {@code _content}, and it would need a Lucene directory.
     */
    @Bean
    public LocalContainerEntityManagerFactoryBean entityManagerFactory(
            ConfigurableListableBeanFactory beanFactory,
            FhirContext fhirContext,
            JpaStorageSettings storageSettings,
            DataSource dataSource) {
        LocalContainerEntityManagerFactoryBean factory =
                HapiEntityManagerFactoryUtil.newEntityManagerFactory(
                        beanFactory, fhirContext, storageSettings);
        factory.setPersistenceUnitName("HAPI_PU");
        factory.setDataSource(dataSource);
        Properties jpa = new Properties();
        jpa.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
        jpa.put("hibernate.hbm2ddl.auto", "update");
        jpa.put("hibernate.search.enabled", "false");
        jpa.put("hibernate.format_sql", "false");
        jpa.put("hibernate.show_sql", "false");
        factory.setJpaProperties(jpa);
        return factory;
    }

    @Bean
    public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
        return new JpaTransactionManager(entityManagerFactory);
    }
}
