package fhirtailor.hapiserver;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.SearchPreferHandlingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * The REST side: one HAPI {@link RestfulServer} servlet at {@code /fhir/*} with the JPA resource
 * providers and the operations fhir-tailor uses.
 *
 * <p>The server is a Spring bean (not only a servlet) because the clinical reasoning
 * configuration registers its {@code $apply} providers on it once the context is up. The
 * providers passed in are beans of HAPI's configuration that it leaves to the application to
 * register.
 */
@Configuration
public class RestServerConfig {

    @Bean
    public RestfulServer restfulServer(
            FhirContext fhirContext,
            ResourceProviderFactory resourceProviders,
            @Qualifier("mySystemProviderR4") JpaSystemProvider<?, ?> systemProvider,
            IFhirSystemDao<?, ?> systemDao,
            ValueSetOperationProvider valueSetOperationProvider,
            BulkDataExportProvider bulkDataExportProvider,
            DatabaseBackedPagingProvider pagingProvider,
            JpaStorageSettings storageSettings,
            ISearchParamRegistry searchParamRegistry,
            IValidationSupport validationSupport) {
        RestfulServer server = new RestfulServer(fhirContext);
        // CRUD, search, history and conditional operations for every R4 resource type.
        server.registerProviders(resourceProviders.createProviders());
        // Transactions and batches (POST of a Bundle to the base URL), system history.
        server.registerProvider(systemProvider);
        // ValueSet/$expand (and $validate-code) against ValueSets stored on the server.
        server.registerProvider(valueSetOperationProvider);
        // $export at system, Patient and Group level (async, Prefer: respond-async).
        server.registerProvider(bulkDataExportProvider);
        // Search result pages are kept in the database so next-links stay valid.
        server.setPagingProvider(pagingProvider);
        server.setDefaultResponseEncoding(EncodingEnum.JSON);
        // The CapabilityStatement lists the search parameters and operations really served.
        server.setServerConformanceProvider(
                new JpaCapabilityStatementProvider(
                        server, systemDao, storageSettings, searchParamRegistry, validationSupport));
        // Prefer: handling=strict rejects an unknown search parameter with 400 (also the
        // default); handling=lenient drops it instead.
        server.registerInterceptor(new SearchPreferHandlingInterceptor(searchParamRegistry));
        return server;
    }

    /** Started with the application so the first request does not pay for HAPI's scan. */
    @Bean
    public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer restfulServer) {
        ServletRegistrationBean<RestfulServer> registration =
                new ServletRegistrationBean<>(restfulServer, "/fhir/*");
        registration.setName("fhir");
        registration.setLoadOnStartup(1);
        return registration;
    }
}
